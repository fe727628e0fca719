// Progress lines, metrics.csv and summary.json formatting.
#include "trainer/report.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/storage.h"
#include "trainer/run_dir.h"

namespace kbit {

namespace {

int digits(int64_t n) {
  int d = 1;
  for (; n >= 10; n /= 10) ++d;
  return d;
}

// Shortest text that reads back as the same double.
std::string shortest(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

}  // namespace

// ---- progress lines ----

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  int64_t s = int64_t(std::llround(seconds));
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60),
                  (long long)(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600),
                  (long long)(s / 60 % 60));
  }
  return buf;
}

std::string format_progress(const TrainProgress& p) {
  char buf[256];
  int w = digits(p.total_steps);
  std::snprintf(buf, sizeof buf,
                "step %*lld/%lld | epoch %6.2f | loss %7.4f | lr %.2e | "
                "%7.1f ms/step | %7.0f samples/s | ETA %6s | optim %7.2f MB",
                w, (long long)p.step, (long long)p.total_steps, p.epoch, p.loss,
                p.lr, p.ms_per_step, p.samples_per_s,
                format_duration(p.eta_seconds).c_str(),
                double(p.optim_state_bytes) / 1e6);
  std::string line = buf;
  if (p.skipped_steps > 0) line += str(" | skipped ", p.skipped_steps);
  return line;
}

std::string format_gpt_progress(const GptProgress& p) {
  char buf[256];
  int w = digits(p.total_steps);
  std::snprintf(buf, sizeof buf,
                "step %*lld/%lld | loss %7.4f | lr %.2e | %7.0f tok/s | "
                "%7.1f ms/step | ETA %6s | optim %7.2f MB",
                w, (long long)p.step, (long long)p.total_steps, p.loss, p.lr,
                p.tokens_per_s, p.ms_per_step,
                format_duration(p.eta_seconds).c_str(),
                double(p.optim_state_bytes) / 1e6);
  std::string line = buf;
  if (p.skipped_steps > 0) line += str(" | skipped ", p.skipped_steps);
  return line;
}

std::string format_gpt_eval(int64_t step, int64_t total_steps, const char* what,
                            double loss, double seconds) {
  char buf[256];
  int w = digits(total_steps);
  std::snprintf(buf, sizeof buf, "eval %*lld/%lld | %s %7.4f | %.1f s", w,
                (long long)step, (long long)total_steps, what, loss, seconds);
  return buf;
}

std::string format_eval(const EvalProgress& p) {
  char buf[256];
  int w = digits(p.total_steps);
  std::snprintf(buf, sizeof buf,
                "eval %*lld/%lld | epoch %6.2f | test_loss %7.4f | "
                "test_acc %6.4f | %.1f s",
                w, (long long)p.step, (long long)p.total_steps, p.epoch,
                p.test_loss, p.test_accuracy, p.seconds);
  return buf;
}

// ---- metrics.csv ----

MetricsCsv::MetricsCsv(const std::string& path, const char* columns)
    : path_(path) {
  file_ = std::fopen(path.c_str(), "w");
  KBIT_CHECK(file_, "[metrics] cannot create ", path, ": ",
             std::strerror(errno));
  std::fputs(columns, file_);
  std::fputc('\n', file_);
  std::fflush(file_);
}

MetricsCsv::~MetricsCsv() {
  if (file_) std::fclose(file_);
}

std::unique_ptr<MetricsCsv> MetricsCsv::resume(const std::string& path,
                                               int64_t last_step,
                                               const char* columns) {
  std::ifstream in(path, std::ios::binary);
  KBIT_USER_CHECK(in, path, ": cannot read the metrics file to resume");
  std::string line, kept;
  KBIT_USER_CHECK(std::getline(in, line) && line == columns, path,
                  ": expected the metrics header '", columns, "', got '", line,
                  "'");
  kept = line + "\n";
  while (std::getline(in, line)) {
    int64_t step = -1;
    auto [end, ec] =
        std::from_chars(line.data(), line.data() + line.size(), step);
    if (ec == std::errc() && *end == ',' && step <= last_step) {
      kept += line + "\n";
    }
  }
  write_file_atomic(path, kept);

  std::unique_ptr<MetricsCsv> csv(new MetricsCsv());
  csv->path_ = path;
  csv->file_ = std::fopen(path.c_str(), "a");
  KBIT_CHECK(csv->file_, "[metrics] cannot append to ", path, ": ",
             std::strerror(errno));
  return csv;
}

const char* MetricsCsv::header() {
  return "step,epoch,train_loss,lr,ms_per_step,samples_per_s,test_loss,"
         "test_accuracy";
}

const char* MetricsCsv::gpt_header() {
  return "step,tokens,train_loss,val_loss,lr,ms_per_step,tokens_per_s,"
         "elapsed_s";
}

namespace {
std::string csv_field(const std::optional<double>& v) {
  std::string out = ",";
  if (v) out += shortest(*v);
  return out;
}
}  // namespace

void MetricsCsv::write(const GptMetricsRow& row) {
  put_line(std::to_string(row.step) + "," + std::to_string(row.tokens) +
           csv_field(row.train_loss) + csv_field(row.val_loss) +
           csv_field(row.lr) + csv_field(row.ms_per_step) +
           csv_field(row.tokens_per_s) + csv_field(row.elapsed_s) + "\n");
}

void MetricsCsv::put_line(const std::string& line) {
  bool ok = std::fputs(line.c_str(), file_) >= 0 && std::fflush(file_) == 0;
  KBIT_CHECK(ok, "[metrics] cannot write ", path_, ": ", std::strerror(errno));
}

void MetricsCsv::write(const MetricsRow& row) {
  auto field = csv_field;
  char epoch[32];
  std::snprintf(epoch, sizeof epoch, "%.4f", row.epoch);
  std::string line = std::to_string(row.step) + "," + epoch +
                     field(row.train_loss) + field(row.lr) +
                     field(row.ms_per_step) + field(row.samples_per_s) +
                     field(row.test_loss) + field(row.test_accuracy) + "\n";
  put_line(line);
}

// ---- summary.json ----

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

JsonObject& JsonObject::add(const std::string& key, double value) {
  entries_.push_back(
      {key, std::isfinite(value) ? shortest(value) : "null", nullptr});
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, int64_t value) {
  entries_.push_back({key, std::to_string(value), nullptr});
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const std::string& value) {
  entries_.push_back({key, json_quote(value), nullptr});
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const char* value) {
  return add(key, std::string(value));
}
JsonObject& JsonObject::add(const std::string& key, bool value) {
  entries_.push_back({key, value ? "true" : "false", nullptr});
  return *this;
}
JsonObject& JsonObject::add_null(const std::string& key) {
  entries_.push_back({key, "null", nullptr});
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const JsonObject& value) {
  entries_.push_back({key, "", std::make_shared<JsonObject>(value)});
  return *this;
}

std::string JsonObject::dump(int indent) const {
  if (entries_.empty()) return "{}";
  const std::string pad(2 * (indent + 1), ' ');
  std::string out = "{\n";
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    out += pad + json_quote(e.key) + ": " +
           (e.object ? e.object->dump(indent + 1) : e.scalar) +
           (i + 1 < entries_.size() ? ",\n" : "\n");
  }
  return out + std::string(2 * indent, ' ') + "}";
}

JsonObject peak_memory_json() {
  JsonObject peak;
  for (int t = 0; t < kNumMemTags; ++t) {
    peak.add(mem_tag_name(MemTag(t)), memory_stats(MemTag(t)).peak);
  }
  return peak;
}

std::string non_finite_loss_message(int64_t step, double loss, double lr,
                                    const std::string& run_dir) {
  return str("step ", step, ": the training loss is ", loss, " at lr ", lr,
             "; stopped (try a lower optim.lr or set optim.clip_grad_norm). ",
             run_dir, " keeps what was logged");
}

}  // namespace kbit
