// The MLP classifier run: Fashion-MNIST, an MLP, one optimizer, a warmup +
// cosine (or constant) learning rate, evaluation on the test split.
//
// Order of work, so that bad input never leaves a folder behind: load and
// check the data, build the model and optimizer, and only then create the
// run folder (trainer/run_dir.h) and write into it:
//   resolved.yaml  the config with every key (written first, atomically)
//   metrics.csv    one row per logging step and per evaluation (flushed)
//   checkpoint.bin every train.checkpoint_every steps and at the end
//                  (trainer/checkpoint.h; written atomically)
//   summary.json   written atomically at the end (status "completed"), at
//                  train.stop_at_step ("stopped"), or when the run stops
//                  on a non-finite loss ("non_finite_loss")
//
// Resuming (RunOptions::resume = a run folder): the config is the folder's
// resolved.yaml (load_resume_config), the checkpoint is verified and loaded
// (parameters, optimizer state, step, dropout stream position, the logging
// window), metrics.csv loses the rows after the checkpoint's step, and the
// run continues in the same folder. The data order is a pure function of
// (seed, epoch), so a resumed run logs bit-identical losses to one that was
// never interrupted. A checkpoint of another model, schedule or data size
// is refused (UserError) before any file changes.
// The library prints nothing: lines for the user go to options.log, first
// the resolved config as a table (once the data is loaded, so that bad data
// gives one message alone), then the run folder and the progress lines.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/module.h"
#include "optim/optimizer.h"
#include "trainer/config.h"

namespace kbit {

struct RunOptions {
  std::string out;     // the run folder (--out), or "" for runs/<name>
  std::string resume;  // a run folder to continue (--resume), or ""
  // When set and *stop becomes nonzero (a SIGINT handler), a gpt run
  // finishes its current step, writes checkpoint.bin and summary.json and
  // returns with status "interrupted".
  const volatile std::sig_atomic_t* stop = nullptr;
  // Receives each line to show (without the final newline); may be empty.
  std::function<void(const std::string&)> log;
};

struct RunSummary {
  std::string run_dir;
  double test_accuracy = 0;
  double test_loss = 0;
  double final_train_loss = 0;  // mean over the last logging window
  int64_t param_count = 0;
  int64_t optimizer_state_bytes = 0;
  int64_t steps = 0;
  int64_t skipped_steps = 0;  // steps the optimizer skipped (NaN/Inf grads)
  double wall_seconds = 0;    // data loading, training and evaluation
  std::string status;         // "completed" or "stopped" (stop_at_step)
};

// Keys --set may change on --resume: the ones that leave every number of
// the run unchanged (train.checkpoint_every, train.stop_at_step, data.path,
// train.max_seconds).
const std::vector<std::string>& resume_override_keys();

// The config of the run in `run_dir` (its resolved.yaml) with `overrides`
// ("key=value", only resume_override_keys()); train.stop_at_step is reset
// to 0 unless overridden. Throws UserError.
Config load_resume_config(const std::string& run_dir,
                          const std::vector<std::string>& overrides);

// Checks every optim.overrides pattern against the parameter names: one
// that matches none is a UserError naming its line, the key and the names.
void check_override_patterns(const Config& config,
                             const std::vector<NamedTensor>& params);

// The optimizer of optim.* for `model`'s parameters (with its forced state
// bits), after check_override_patterns; UserError prefixed with where the
// offending key was set.
std::unique_ptr<Optimizer> build_module_optimizer(const Config& config,
                                                  const Module& model);

// Runs the config (model.type mlp, data.dataset fashion_mnist). Throws
// UserError for bad data (the message starts with data.path's origin) and
// for a non-finite training loss (after writing summary.json).
RunSummary train_mlp(const Config& config, const RunOptions& options);

}  // namespace kbit
