// Run folder, atomic writes, metrics.csv, summary.json, progress lines and
// the learning-rate schedule.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "trainer/report.h"
#include "trainer/run_dir.h"
#include "trainer/schedule.h"
#include "trainer/temp_dir.h"

namespace fs = std::filesystem;
using kbit::test::read_text;
using kbit::test::TempDir;

namespace {

// Runs a test inside `dir` (runs/ is relative to the current directory).
class CwdGuard {
 public:
  explicit CwdGuard(const fs::path& dir) : old_(fs::current_path()) {
    fs::current_path(dir);
  }
  ~CwdGuard() { fs::current_path(old_); }

 private:
  fs::path old_;
};

// A metrics row with only its step and epoch set.
kbit::MetricsRow row_at(int64_t step, double epoch) {
  kbit::MetricsRow row;
  row.step = step;
  row.epoch = epoch;
  return row;
}

}  // namespace

TEST_CASE("run_dir: atomic writes replace a file whole") {
  TempDir dir;
  std::string path = dir / "summary.json";
  kbit::write_file_atomic(path, "first\n");
  CHECK(read_text(path) == "first\n");
  kbit::write_file_atomic(path, "second\n");
  CHECK(read_text(path) == "second\n");
  // No temporary file is left behind.
  auto files = std::distance(fs::directory_iterator(dir.path()),
                             fs::directory_iterator());
  CHECK(files == 1);
  CHECK_THROWS_AS(kbit::write_file_atomic(dir / "no/such/dir/x", "x"),
                  kbit::Error);
}

TEST_CASE("run_dir: runs/<name> is never reused") {
  TempDir dir;
  CwdGuard cwd(dir.path());
  CHECK(kbit::create_run_dir("a", "") == "runs/a");
  CHECK(kbit::create_run_dir("a", "") == "runs/a-2");
  CHECK(kbit::create_run_dir("a", "") == "runs/a-3");
  CHECK(kbit::create_run_dir("b", "") == "runs/b");
  CHECK(fs::is_directory("runs/a-3"));
}

TEST_CASE("run_dir: --out must be new or empty") {
  TempDir dir;
  std::string out = dir / "out";
  kbit::check_out_dir(out);  // absent: fine, and not created
  CHECK(!fs::exists(out));
  CHECK(kbit::create_run_dir("ignored", out) == out);
  CHECK(fs::is_directory(out));
  kbit::check_out_dir(out);  // empty: fine

  dir.write("out/metrics.csv", "old");
  try {
    kbit::check_out_dir(out);
    FAIL("a folder with files was accepted");
  } catch (const kbit::UserError& e) {
    CHECK(std::string(e.what()) ==
          "--out " + out +
              ": expected a new or empty folder, got a folder with files (an "
              "earlier run?); remove it or choose another --out");
  }
  CHECK_THROWS_AS(kbit::create_run_dir("x", out), kbit::UserError);
  CHECK(read_text(out + "/metrics.csv") == "old");
  CHECK_THROWS_AS(kbit::check_out_dir(out + "/metrics.csv"), kbit::UserError);
}

TEST_CASE("report: metrics.csv rows have every column") {
  TempDir dir;
  std::string path = dir / "metrics.csv";
  {
    kbit::MetricsCsv csv(path);
    kbit::MetricsRow train{10, 0.5, 0.25, 1e-3, 12.5, 1000.0, {}, {}};
    csv.write(train);
    // Flushed at once: readable while the writer is still open.
    CHECK(read_text(path).find("\n10,0.5000,0.25,") != std::string::npos);
    kbit::MetricsRow eval{20, 1.0, {}, {}, {}, {}, 0.4, 0.875};
    csv.write(eval);
  }
  CHECK(read_text(path) ==
        "step,epoch,train_loss,lr,ms_per_step,samples_per_s,test_loss,"
        "test_accuracy\n"
        "10,0.5000,0.25,0.001,12.5,1000,,\n"
        "20,1.0000,,,,,0.4,0.875\n");
}

TEST_CASE("report: summary JSON keeps key order, nests, nulls non-finite") {
  kbit::JsonObject peak;
  peak.add("param", int64_t(4096));
  kbit::JsonObject o;
  o.add("name", "a\"b")
      .add("test_accuracy", 0.8875)
      .add("steps", int64_t(7))
      .add("loss", std::nan(""))
      .add("ok", true)
      .add("peak_bytes", peak);
  CHECK(o.dump() ==
        "{\n"
        "  \"name\": \"a\\\"b\",\n"
        "  \"test_accuracy\": 0.8875,\n"
        "  \"steps\": 7,\n"
        "  \"loss\": null,\n"
        "  \"ok\": true,\n"
        "  \"peak_bytes\": {\n"
        "    \"param\": 4096\n"
        "  }\n"
        "}");
}

TEST_CASE("report: progress lines have a fixed width") {
  kbit::TrainProgress p;
  p.step = 5;
  p.total_steps = 9380;
  p.epoch = 0.01;
  p.loss = 2.3026;
  p.lr = 1e-3;
  p.ms_per_step = 12.34;
  p.samples_per_s = 10372;
  p.eta_seconds = 115.6;
  p.optim_state_bytes = 12'600'000;
  std::string a = kbit::format_progress(p);
  CHECK(a ==
        "step    5/9380 | epoch   0.01 | loss  2.3026 | lr 1.00e-03 | "
        "   12.3 ms/step |   10372 samples/s | ETA  1m56s | optim   12.60 MB");
  p.step = 9380;
  p.eta_seconds = 0;
  CHECK(kbit::format_progress(p).size() == a.size());
  p.skipped_steps = 3;  // steps with non-finite gradients, when any
  CHECK(kbit::format_progress(p).substr(a.size()) == " | skipped 3");

  kbit::EvalProgress e{469, 9380, 1.0, 0.4012, 0.8561, 0.84};
  CHECK(kbit::format_eval(e) ==
        "eval  469/9380 | epoch   1.00 | test_loss  0.4012 | test_acc 0.8561 "
        "| 0.8 s");
  CHECK(kbit::format_duration(42.2) == "42s");
  CHECK(kbit::format_duration(3725) == "1h02m");
}

TEST_CASE("report: metrics.csv resumes after a step, dropping later rows") {
  TempDir dir;
  const std::string path = dir / "metrics.csv";
  {
    kbit::MetricsCsv csv(path);
    for (int64_t s : {2, 4, 4, 6}) csv.write(row_at(s, 0.5));
  }
  {
    auto csv = kbit::MetricsCsv::resume(path, 4);
    csv->write(row_at(5, 0.5));
  }
  const std::string h = std::string(kbit::MetricsCsv::header()) + "\n";
  CHECK(read_text(path) == h + "2,0.5000,,,,,,\n4,0.5000,,,,,,\n"
                               "4,0.5000,,,,,,\n5,0.5000,,,,,,\n");
  dir.write("bad.csv", "not,a,metrics,file\n");
  CHECK_THROWS_AS(kbit::MetricsCsv::resume(dir / "bad.csv", 1),
                  kbit::UserError);
}

TEST_CASE("schedule: warmup then cosine to the floor, or constant") {
  // Tolerance for values computed by one cos() in double.
  constexpr double kTol = 1e-12;
  kbit::LrSchedule s{1.0, 10, 110, true, 0.1};
  CHECK(s.at(0) == doctest::Approx(0.1).epsilon(kTol));
  CHECK(s.at(9) == doctest::Approx(1.0).epsilon(kTol));
  CHECK(s.at(10) == doctest::Approx(1.0).epsilon(kTol));
  CHECK(s.at(60) == doctest::Approx(0.55).epsilon(kTol));  // halfway
  CHECK(s.at(109) > 0.1);
  CHECK(s.at(109) < 0.1 + 1e-3);
  for (int64_t i = 10; i < 109; ++i) CHECK(s.at(i + 1) <= s.at(i));

  kbit::LrSchedule c{0.5, 0, 100, false, 0.0};
  CHECK(c.at(0) == 0.5);
  CHECK(c.at(99) == 0.5);
}
