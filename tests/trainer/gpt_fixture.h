// Shared by the gpt trainer tests: a tiny corpus, a tiny config and
// metrics.csv without its timing columns.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "trainer/temp_dir.h"

namespace kbit::test {

// About 9 KB of repetitive English-like lines: enough for a 90/10 split
// with many windows of 16 bytes.
inline std::string tiny_corpus() {
  const char* words[] = {"and", "the", "lord", "said", "unto",  "him",
                         "in",  "a",   "land", "of",   "light", "day"};
  std::string text;
  for (int i = 0; i < 600; ++i) {
    for (int w = 0; w < 3 + i % 4; ++w) {
      text += words[(i * 7 + w * 5) % 12];
      text += w + 1 < 3 + i % 4 ? " " : ".\n";
    }
  }
  return text;
}

// One block of width 16, context 16, 4 windows a step, 8 steps with warmup
// and cosine; every step logged, an evaluation every 3 steps. `extra` is
// appended (more keys of the train section, or other sections).
inline std::string tiny_gpt_config(const std::string& corpus, int bits,
                                   const std::string& extra = "") {
  return str("name: g\nseed: 1\n",
             "model:\n  type: gpt\n  n_layer: 1\n  n_head: 2\n  d_model: 16\n",
             "  block_size: 16\n  mlp_ratio: 2\n",
             "data:\n  dataset: text\n  path: ", corpus, "\n",
             "optim:\n  name: adamw\n  lr: 0.01\n  beta2: 0.95\n",
             "  weight_decay: 0.1\n  clip_grad_norm: 1.0\n  bits: ", bits,
             "\n  min_8bit_size: 256\n",
             "  overrides:\n    - {pattern: \"*.bias\", weight_decay: 0}\n",
             "train:\n  batch_size: 4\n  max_steps: 8\n  log_every: 1\n",
             "  eval_every: 3\n  eval_batches: 1\n  warmup_steps: 2\n",
             "  min_lr_ratio: 0.1\n", extra);
}

// The columns of metrics.csv that must repeat exactly between runs: step,
// tokens, train_loss, val_loss, lr (not ms_per_step, tokens_per_s,
// elapsed_s), one line per row.
inline std::string gpt_metrics_losses(const std::string& run_dir) {
  std::istringstream in(read_text(run_dir + "/metrics.csv"));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cols;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cols.push_back(c);
    if (!line.empty() && line.back() == ',') cols.push_back("");
    if (cols.size() != 8) return "bad row: " + line;
    out += cols[0] + "," + cols[1] + "," + cols[2] + "," + cols[3] + "," +
           cols[4] + "\n";
  }
  return out;
}

}  // namespace kbit::test
