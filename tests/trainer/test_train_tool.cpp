// build/train end to end: bad input exits with code 2, one message and no
// run folder (an earlier one stays untouched); a tiny real run writes
// resolved.yaml, metrics.csv and summary.json; a diverging run stops with
// code 2 and keeps its files.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "optim/optimizer.h"
#include "trainer/temp_dir.h"

namespace fs = std::filesystem;
using kbit::test::read_text;
using kbit::test::TempDir;

namespace {

const std::string kTrain = std::string(KBIT_BINARY_DIR) + "/train";
const std::string kData = "/usr/share/datasets/fashion-mnist";

struct Result {
  int exit_code = -1;
  std::string err;  // stderr
};

// Runs build/train with `args` inside `dir` (runs/ lands there).
Result run_train(const TempDir& dir, const std::string& args) {
  REQUIRE_MESSAGE(fs::exists(kTrain), kTrain, " is missing: build all targets");
  const std::string err = dir / "stderr.txt";
  const std::string cmd = "cd '" + dir.path().string() + "' && '" + kTrain +
                          "' " + args + " 2>'" + err + "' >/dev/null";
  int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text(err);
  fs::remove(err);
  return r;
}

// A small, fast run: 512 training images, one hidden layer of 16.
const char* kTiny =
    "name: tiny\n"
    "model:\n"
    "  hidden: [16]\n"
    "data:\n"
    "  limit: 512\n"
    "train:\n"
    "  epochs: 2\n"
    "  batch_size: 64\n"
    "  log_every: 4\n";

int count_lines_starting(const std::string& text, const std::string& start) {
  int n = 0;
  for (size_t pos = 0; pos < text.size();) {
    n += text.compare(pos, start.size(), start) == 0;
    size_t nl = text.find('\n', pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
  }
  return n;
}

}  // namespace

TEST_CASE("train tool: bad input exits 2 with no run folder") {
  TempDir dir;
  // An earlier run of the same name, which must stay as it is.
  dir.write("runs/tiny/placeholder", "");
  dir.write("runs/tiny/metrics.csv", "old");

  dir.write("bad.yaml", std::string(kTiny) + "optim:\n  lrr: 0.1\n");
  Result r = run_train(dir, "bad.yaml");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "bad.yaml:11: optim.lrr: unknown key; did you mean "
        "'optim.lr'?\n");

  dir.write("good.yaml", std::string(kTiny));
  r = run_train(dir, "good.yaml --set train.batch_size=abc");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "--set train.batch_size=abc: train.batch_size: expected an "
        "integer >= 1, got 'abc'\n");

  r = run_train(dir, "missing.yaml");
  CHECK(r.exit_code == 2);
  CHECK(r.err == "missing.yaml: config file not found\n");

  r = run_train(dir, "good.yaml --sett x=1");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("unknown option '--sett'", 0) == 0);

  // The data folder exists but holds no dataset: the loader's message is
  // prefixed with where data.path was set.
  fs::create_directories(dir / "empty");
  dir.write("nodata.yaml", "name: tiny\ndata:\n  path: empty\n");
  r = run_train(dir, "nodata.yaml");
  CHECK(r.exit_code == 2);
  CAPTURE(r.err);
  CHECK(r.err.rfind("nodata.yaml:3: data.path: ", 0) == 0);
  CHECK(r.err.find("train-images-idx3-ubyte.gz") != std::string::npos);
  CHECK(count_lines_starting(r.err, "") == 1);  // one line

  // A bad KBIT_REQUANT (the 8-bit kernels' requantization path) is refused
  // before any file is written.
  setenv("KBIT_REQUANT", "gather", 1);
  r = run_train(dir, "good.yaml");
  unsetenv("KBIT_REQUANT");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "KBIT_REQUANT: expected automatic, affine or table, got 'gather'\n");

  // --out into a folder with files is refused before any work.
  r = run_train(dir, "good.yaml --out runs/tiny");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("--out runs/tiny: expected a new or empty folder", 0) == 0);

  // Nothing was created or changed.
  CHECK(read_text(dir / "runs/tiny/metrics.csv") == "old");
  CHECK(std::distance(fs::directory_iterator(dir / "runs"),
                      fs::directory_iterator()) == 1);
  CHECK(std::distance(fs::directory_iterator(dir / "runs/tiny"),
                      fs::directory_iterator()) == 2);
}

TEST_CASE("train tool: a tiny run writes its files and never reuses one") {
  REQUIRE_MESSAGE(fs::is_directory(kData), kData,
                  " is missing: install dataset-fashion-mnist");
  TempDir dir;
  dir.write("tiny.yaml", kTiny);
  dir.write("runs/tiny/metrics.csv", "old");
  Result r = run_train(dir, "tiny.yaml");
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(read_text(dir / "runs/tiny/metrics.csv") == "old");

  // 512 / 64 = 8 steps per epoch, 16 in all, a line every 4 steps.
  const std::string run = dir / "runs/tiny-2";
  CHECK(r.err.find("run folder: runs/tiny-2\n") != std::string::npos);
  CHECK(count_lines_starting(r.err, "step ") == 4);
  CHECK(count_lines_starting(r.err, "eval ") == 2);
  CHECK(count_lines_starting(r.err, "  optim.lr ") == 1);  // the table

  std::string summary = read_text(run + "/summary.json");
  for (const char* key :
       {"test_accuracy", "final_train_loss", "param_count",
        "optimizer_state_bytes", "steps", "wall_seconds", "skipped_steps",
        "peak_bytes", "optim_state", "name"}) {
    CAPTURE(key);
    CHECK(summary.find(kbit::str('"', key, "\": ")) != std::string::npos);
  }
  // 784*16 + 16 + 16*10 + 10 parameters; AdamW keeps 2 f32 states each.
  CHECK(summary.find("\"param_count\": 12730,") != std::string::npos);
  CHECK(summary.find("\"optimizer_state_bytes\": 101840,") !=
        std::string::npos);
  CHECK(summary.find("\"steps\": 16,") != std::string::npos);
  CHECK(summary.find("\"status\": \"completed\"") != std::string::npos);

  std::string metrics = read_text(run + "/metrics.csv");
  CHECK(count_lines_starting(metrics, "step,epoch,train_loss,") == 1);
  CHECK(count_lines_starting(metrics, "") == 1 + 4 + 2);
  CHECK(read_text(run + "/resolved.yaml").find("  limit: 512") !=
        std::string::npos);
}

TEST_CASE("train tool: a non-finite loss stops the run with exit 2") {
  REQUIRE_MESSAGE(fs::is_directory(kData), kData,
                  " is missing: install dataset-fashion-mnist");
  TempDir dir;
  dir.write("tiny.yaml", kTiny);
  // SGD at lr 1e30 overflows the weights after one step.
  Result r = run_train(dir,
                       "tiny.yaml --set optim.name=sgd "
                       "--set optim.lr=1e30 --out run");
  CAPTURE(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("the training loss is") != std::string::npos);
  CHECK(fs::exists(dir / "run/metrics.csv"));
  CHECK(read_text(dir / "run/summary.json")
            .find("\"status\": \"non_finite_loss\"") != std::string::npos);
}

TEST_CASE("train tool: bad optim settings and resumes exit 2, no folder") {
  TempDir dir;
  const std::string names =
      "sgd, adam, adamw, rmsprop, adagrad, lion, lamb, lars";
  const std::string sizes = "0, 32, 64, 128, 256, 512, 1024, 2048, 4096";
  auto refused = [&](const std::string& optim) {
    dir.write("bad.yaml", std::string(kTiny) + "optim:\n" + optim);
    return run_train(dir, "bad.yaml");
  };
  Result r = refused("  name: adan\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err == "bad.yaml:11: optim.name: expected one of " + names +
                     ", got 'adan'; did you mean 'adam'?\n");
  r = refused("  bits: 7\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "bad.yaml:11: optim.bits: expected one of 32, 8, 4, got "
        "'7'\n");
  r = refused("  block_size: 8192\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err == "bad.yaml:11: optim.block_size: expected one of " + sizes +
                     ", got '8192'\n");
  r = refused("  block_size: 96\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err == "bad.yaml:11: optim.block_size: expected one of " + sizes +
                     ", got '96'\n");
  // The optimizer's own checks, prefixed with where the key was set.
  r = refused("  name: sgd\n  bits: 4\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("bad.yaml:12: optim.bits: ", 0) == 0);
  CHECK(count_lines_starting(r.err, "") == 1);
  // Checked against the model's parameter names, before the run folder.
  r = refused(
      "  overrides:\n    - {pattern: \"*.bias\", bits: 32}\n"
      "    - {pattern: \"*.nope\", bits: 32}\n");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "bad.yaml:13: optim.overrides[1].pattern: '*.nope' matches "
        "no parameter; parameters are fc0.weight, fc0.bias, "
        "fc1.weight, fc1.bias\n");

  r = run_train(dir, "--resume runs/none");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "--resume runs/none: expected a run folder with "
        "resolved.yaml, got none\n");
  r = run_train(dir, "bad.yaml --resume runs/none");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("--resume: expected no CONFIG and no --out", 0) == 0);
  CHECK_FALSE(fs::exists(dir / "runs"));
}

TEST_CASE("train tool: --resume continues a stopped run in its folder") {
  TempDir dir;
  dir.write("tiny.yaml", kTiny);
  Result r = run_train(dir, "tiny.yaml --out whole");
  REQUIRE(r.exit_code == 0);
  r = run_train(dir, "tiny.yaml --out part --set train.stop_at_step=6");
  CAPTURE(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("stopped after step 6 (train.stop_at_step); continue "
                   "with: train --resume part") != std::string::npos);
  r = run_train(dir, "--resume part --set optim.lr=1");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("--set optim.lr=1: optim.lr: cannot change on --resume",
                    0) == 0);
  r = run_train(dir, "--resume part");
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("run folder: part (resumed at step 6)") !=
        std::string::npos);
  // Same losses and evaluations (the timing columns aside).
  auto losses = [&](const std::string& run) {
    std::string out, text = read_text(dir / (run + "/metrics.csv"));
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> cols(1);
      for (char c : line) c == ',' ? cols.emplace_back() : cols.back() += c;
      REQUIRE(cols.size() == 8);
      cols[4] = cols[5] = "";  // ms_per_step, samples_per_s
      for (const std::string& c : cols) out += c + ",";
      out += "\n";
    }
    return out;
  };
  CHECK(losses("part") == losses("whole"));
  CHECK(count_lines_starting(read_text(dir / "part/metrics.csv"), "") ==
        1 + 4 + 2);
  CHECK(
      read_text(dir / "part/summary.json").find("\"status\": \"completed\"") !=
      std::string::npos);

  // A damaged checkpoint is refused with exit 2.
  std::string bytes = read_text(dir / "part/checkpoint.bin");
  dir.write("part/checkpoint.bin", bytes.substr(0, bytes.size() - 9));
  r = run_train(dir, "--resume part");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("checkpoint part/checkpoint.bin: truncated (", 0) == 0);
}
