// The MLP classifier run: Fashion-MNIST, an MLP, one optimizer, a warmup +
// cosine (or constant) learning rate, evaluation on the test split.
//
// Order of work, so that bad input never leaves a folder behind: load and
// check the data, build the model and optimizer, and only then create the
// run folder (trainer/run_dir.h) and write into it:
//   resolved.yaml  the config with every key (written first, atomically)
//   metrics.csv    one row per logging step and per evaluation (flushed)
//   summary.json   written atomically at the end, or when the run stops
//                  on a non-finite loss (status "non_finite_loss")
// The library prints nothing: lines for the user go to options.log, first
// the resolved config as a table (once the data is loaded, so that bad data
// gives one message alone), then the run folder and the progress lines.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "trainer/config.h"

namespace kbit {

struct RunOptions {
  std::string out;  // the run folder (--out), or "" for runs/<name>
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
};

// Runs the config (model.type mlp, data.dataset fashion_mnist). Throws
// UserError for bad data (the message starts with data.path's origin) and
// for a non-finite training loss (after writing summary.json).
RunSummary train_mlp(const Config& config, const RunOptions& options);

}  // namespace kbit
