// What a run reports: the progress lines (for stderr), metrics.csv rows and
// the summary.json object. Formatting only: nothing here prints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kbit {

// ---- progress lines ----

struct TrainProgress {
  int64_t step = 0;  // steps done, 1-based
  int64_t total_steps = 0;
  double epoch = 0;  // fractional: steps done / steps per epoch
  double loss = 0;   // mean training loss over the logging window
  double lr = 0;
  double ms_per_step = 0;
  double samples_per_s = 0;
  double eta_seconds = 0;
  int64_t optim_state_bytes = 0;
  int64_t skipped_steps = 0;  // shown as "| skipped N" when not zero
};

struct EvalProgress {
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  double test_loss = 0;
  double test_accuracy = 0;
  double seconds = 0;  // time the evaluation took
};

// A GPT run's progress: tokens instead of epochs and samples.
struct GptProgress {
  int64_t step = 0;  // steps done, 1-based
  int64_t total_steps = 0;
  double loss = 0;  // mean training loss over the logging window
  double lr = 0;
  double tokens_per_s = 0;
  double ms_per_step = 0;
  double eta_seconds = 0;
  int64_t optim_state_bytes = 0;
  int64_t skipped_steps = 0;  // shown as "| skipped N" when not zero
};

// "step  250/3000 | loss 2.1234 | lr 2.00e-03 | 7012 tok/s | 584.1 ms/step
// | ETA 26m47s | optim 1.23 MB"
std::string format_gpt_progress(const GptProgress& p);
// "eval  250/3000 | val_loss 2.0876 | 1.3 s" (what: "val_loss" for the
// fixed sample, "final_val_loss" for the whole split).
std::string format_gpt_eval(int64_t step, int64_t total_steps, const char* what,
                            double loss, double seconds);

// "step  120/9380 | epoch  0.26 | loss 0.5123 | lr 9.99e-04 | ..." with
// fixed-width fields, so lines stack into columns.
std::string format_progress(const TrainProgress& p);
// "eval  469/9380 | epoch  1.00 | test_loss 0.4012 | test_acc 0.8561 | ..."
std::string format_eval(const EvalProgress& p);
// "42s", "3m05s", "1h02m".
std::string format_duration(double seconds);

// ---- metrics.csv ----

// One row per logging step and one per evaluation; columns that do not
// apply to a row are empty. Each row is flushed, so a crash loses nothing
// already logged.
struct MetricsRow {
  int64_t step = 0;
  double epoch = 0;
  std::optional<double> train_loss, lr, ms_per_step, samples_per_s;
  std::optional<double> test_loss, test_accuracy;
};

// A GPT run's row: one per logging step (val_loss empty) and one per
// evaluation (train_loss, ms_per_step, tokens_per_s empty).
struct GptMetricsRow {
  int64_t step = 0;
  int64_t tokens = 0;  // training tokens seen so far
  std::optional<double> train_loss, val_loss, lr, ms_per_step, tokens_per_s;
  double elapsed_s = 0;  // training seconds since the run began (resumes too)
};

class MetricsCsv {
 public:
  // Creates `path` and writes `columns`. Throws kbit::Error.
  explicit MetricsCsv(const std::string& path, const char* columns = header());
  // Continues `path` after a resume: keeps the header and the rows up to
  // `last_step` (rows logged after the checkpoint are dropped, atomically),
  // then appends. Throws UserError when `path` does not start with
  // `columns`.
  static std::unique_ptr<MetricsCsv> resume(const std::string& path,
                                            int64_t last_step,
                                            const char* columns = header());
  ~MetricsCsv();
  MetricsCsv(const MetricsCsv&) = delete;
  MetricsCsv& operator=(const MetricsCsv&) = delete;

  static const char* header();      // "step,epoch,train_loss,..." (mlp)
  static const char* gpt_header();  // "step,tokens,train_loss,val_loss,..."
  void write(const MetricsRow& row);
  void write(const GptMetricsRow& row);

 private:
  MetricsCsv() = default;
  void put_line(const std::string& line);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// ---- summary.json ----

// A JSON object that keeps its keys in insertion order. Non-finite numbers
// are written as null.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, int64_t value);
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const char* value);
  JsonObject& add(const std::string& key, bool value);
  JsonObject& add_null(const std::string& key);
  JsonObject& add(const std::string& key, const JsonObject& value);
  std::string dump(int indent = 0) const;  // pretty-printed, 2 spaces

 private:
  struct Entry {
    std::string key;
    std::string scalar;                  // encoded JSON, when not an object
    std::shared_ptr<JsonObject> object;  // a nested object
  };
  std::vector<Entry> entries_;
};

std::string json_quote(const std::string& s);

// summary.json's "peak_bytes": the peak bytes of every memory tag.
JsonObject peak_memory_json();

// The error of a run stopped at `step` by a non-finite training loss.
std::string non_finite_loss_message(int64_t step, double loss, double lr,
                                    const std::string& run_dir);

}  // namespace kbit
