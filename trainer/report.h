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

class MetricsCsv {
 public:
  // Creates `path` and writes the header. Throws kbit::Error.
  explicit MetricsCsv(const std::string& path);
  // Continues `path` after a resume: keeps the header and the rows up to
  // `last_step` (rows logged after the checkpoint are dropped, atomically),
  // then appends. Throws UserError when `path` is not a metrics file.
  static std::unique_ptr<MetricsCsv> resume(const std::string& path,
                                            int64_t last_step);
  ~MetricsCsv();
  MetricsCsv(const MetricsCsv&) = delete;
  MetricsCsv& operator=(const MetricsCsv&) = delete;

  static const char* header();  // "step,epoch,train_loss,..."
  void write(const MetricsRow& row);

 private:
  MetricsCsv() = default;
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

}  // namespace kbit
