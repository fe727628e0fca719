// The GPT run: a byte-level language model on a text corpus (data.dataset
// kjv: the prepared King James Bible; text: any file or corpus folder), one
// optimizer, warmup + cosine, gradient accumulation, evaluation on a fixed
// validation sample every train.eval_every steps, and at the end the loss
// over the whole validation split.
//
// The run folder and the order of work are those of train_mlp.h: the data
// is loaded and checked, the model and optimizer built and a resumed
// checkpoint verified before the folder exists or any file in it changes.
// It holds resolved.yaml, metrics.csv (MetricsCsv::gpt_header), checkpoint
// .bin (every train.checkpoint_every steps and at the end) and summary.json.
//
// Determinism: micro-batch m of step s reads the data stream at word
// ((s * grad_accum) + m) * batch_size, so the batches are a pure function
// of (seed, step) and a resumed run logs bit-identical losses. The fixed
// validation sample is drawn once from its own stream.
//
// Stops: train.max_steps (the schedule's length, required), train
// .stop_at_step ("stopped"), train.max_seconds of training time, resumes
// included ("time_limit"), RunOptions::stop ("interrupted": no final
// evaluation, for a quick exit), a non-finite loss ("non_finite_loss",
// UserError). Every stop writes checkpoint.bin and summary.json.
#pragma once

#include <cstdint>
#include <string>

#include "models/gpt.h"
#include "trainer/config.h"
#include "trainer/train_mlp.h"

namespace kbit {

// model.* keys as a GPTConfig (vocab 256: bytes).
GPTConfig gpt_config_from(const Config& config);

struct GptRunSummary {
  std::string run_dir;
  std::string status;            // completed, stopped, time_limit, interrupted
  double final_train_loss = 0;   // mean over the last logging window
  double final_val_loss = 0;     // whole val split; NaN when interrupted
  double val_loss_sample = 0;    // the last fixed-sample evaluation
  double tokens_per_second = 0;  // training tokens / training seconds
  int64_t tokens = 0;            // training tokens seen
  int64_t steps = 0;
  int64_t optimizer_state_bytes = 0;
  int64_t param_count = 0;
  int64_t skipped_steps = 0;
  double wall_seconds = 0;  // data loading, training and evaluation
};

// Runs the config (model.type gpt). Throws UserError for bad data (the
// message starts with data.path's origin), a bad model shape or schedule,
// a checkpoint that does not fit, and a non-finite training loss (after
// writing summary.json).
GptRunSummary train_gpt(const Config& config, const RunOptions& options);

}  // namespace kbit
