// --resume: a run stopped at train.stop_at_step and resumed from its
// checkpoint logs bit-identical losses, evaluations and final parameters
// and optimizer state to a run that was never stopped (32- and 8-bit
// states; mid-epoch and at an epoch's end). Bad resumes are refused before
// any file changes.
#include <doctest/doctest.h>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "optim/optimizer.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/temp_dir.h"
#include "trainer/train_mlp.h"

using namespace kbit;
using kbit::test::read_text;
using kbit::test::TempDir;
namespace fs = std::filesystem;

namespace {

// 300 examples in batches of 64: 5 steps per epoch, the last one of 44.
// Dropout, warmup and cosine, so every stream and the schedule matter.
std::string tiny_config(int bits) {
  return str(
      "name: resume\n"
      "model:\n  hidden: [16]\n  dropout: 0.2\n"
      "data:\n  limit: 300\n"
      "optim:\n  name: adamw\n  lr: 0.01\n  weight_decay: 0.01\n"
      "  bits: ",
      bits,
      "\n  min_8bit_size: 1024\n"
      "train:\n  epochs: 3\n  batch_size: 64\n  log_every: 1\n"
      "  warmup_steps: 3\n  schedule: cosine\n  checkpoint_every: 4\n");
}

RunSummary run(const Config& config, const std::string& out,
               const std::string& resume = "") {
  RunOptions options;
  options.out = out;
  options.resume = resume;
  return train_mlp(config, options);
}

// metrics.csv without the timing columns (ms_per_step, samples_per_s).
std::string metrics_without_timing(const std::string& dir) {
  std::istringstream in(read_text(dir + "/metrics.csv"));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cols;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cols.push_back(c);
    if (line.back() == ',') cols.push_back("");
    REQUIRE(cols.size() == 8);
    out += cols[0] + "," + cols[1] + "," + cols[2] + "," + cols[3] + "," +
           cols[6] + "," + cols[7] + "\n";
  }
  return out;
}

void check_same_final_state(const std::string& a, const std::string& b) {
  const Checkpoint ca = read_checkpoint(a + "/checkpoint.bin");
  const Checkpoint cb = read_checkpoint(b + "/checkpoint.bin");
  REQUIRE(ca.tensors.size() == cb.tensors.size());
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    CAPTURE(ca.tensors[i].name);
    CHECK(ca.tensors[i].bytes == cb.tensors[i].bytes);
  }
  CHECK(ca.optimizer_state == cb.optimizer_state);
  CHECK(ca.counter(a, "step") == cb.counter(b, "step"));
  CHECK(ca.counter(a, "rng.dropout") == cb.counter(b, "rng.dropout"));
}

void check_resume_is_exact(int bits) {
  TempDir dir;
  const std::string cfg = dir.write("resume.yaml", tiny_config(bits));
  const std::string whole = dir / "whole";
  RunSummary w = run(Config::load(cfg, {}), whole);
  CHECK(w.status == "completed");
  CHECK(w.steps == 15);
  // 8 bits: fc0.weight (12544) has 1-byte states; the rest keep f32 ones.
  const int64_t f32_bytes = 2 * 4 * 12730;
  if (bits == 8) CHECK(w.optimizer_state_bytes < f32_bytes / 2);
  if (bits == 32) CHECK(w.optimizer_state_bytes == f32_bytes);

  // 7: inside epoch 2 (between checkpoints); 10: the end of epoch 2.
  for (int stop : {7, 10}) {
    CAPTURE(stop);
    const std::string part = dir / str("part", stop);
    RunSummary p =
        run(Config::load(cfg, {str("train.stop_at_step=", stop)}), part);
    CHECK(p.status == "stopped");
    CHECK(p.steps == stop);
    CHECK(read_text(part + "/summary.json").find("\"stopped\"") !=
          std::string::npos);

    RunSummary r = run(load_resume_config(part, {}), "", part);
    CHECK(r.status == "completed");
    CHECK(r.steps == 15);
    CHECK(metrics_without_timing(part) == metrics_without_timing(whole));
    CHECK(r.test_accuracy == w.test_accuracy);
    check_same_final_state(whole, part);
  }
}

}  // namespace

TEST_CASE("resume: 32-bit states give bit-identical losses and parameters") {
  check_resume_is_exact(32);
}

TEST_CASE("resume: 8-bit states give bit-identical losses and parameters") {
  check_resume_is_exact(8);
}

TEST_CASE("resume: only keys that leave the run unchanged may be set") {
  TempDir dir;
  fs::create_directories(dir / "run");
  dir.write("run/resolved.yaml", tiny_config(32));
  Config c = load_resume_config(dir / "run", {"train.checkpoint_every=2"});
  CHECK(c.get_int("train.checkpoint_every") == 2);
  CHECK(c.get_int("train.stop_at_step") == 0);
  CHECK_THROWS_WITH_AS(load_resume_config(dir / "run", {"optim.lr=0.1"}),
                       "--set optim.lr=0.1: optim.lr: cannot change on "
                       "--resume (it would change the run); keys that can: "
                       "train.checkpoint_every, train.stop_at_step, "
                       "data.path, train.max_seconds",
                       UserError);
  CHECK_THROWS_WITH_AS(load_resume_config(dir / "nope", {}),
                       ("--resume " + (dir / "nope") +
                        ": expected a run folder with resolved.yaml, got "
                        "none")
                           .c_str(),
                       UserError);
}

TEST_CASE("resume: a bad checkpoint or another model is refused first") {
  TempDir dir;
  const std::string cfg = dir.write("resume.yaml", tiny_config(32));
  const std::string part = dir / "part";
  run(Config::load(cfg, {"train.stop_at_step=6"}), part);
  const std::string metrics = read_text(part + "/metrics.csv");
  const std::string ckpt = part + "/checkpoint.bin";
  const std::string good = read_text(ckpt);

  auto resume_error = [&]() -> std::string {
    try {
      run(load_resume_config(part, {}), "", part);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(resumed)";
  };
  // Corrupted, then truncated.
  std::string bad = good;
  bad[bad.size() / 3] ^= 4;
  dir.write("part/checkpoint.bin", bad);
  CHECK(resume_error() ==
        "checkpoint " + ckpt +
            ": corrupted (the checksum does not match the contents)");
  dir.write("part/checkpoint.bin", good.substr(0, good.size() / 2));
  CHECK(resume_error().rfind("checkpoint " + ckpt + ": truncated (", 0) == 0);
  CHECK(read_text(part + "/metrics.csv") == metrics);  // untouched

  // Another model shape in the run's config.
  dir.write("part/checkpoint.bin", good);
  std::string yaml = read_text(part + "/resolved.yaml");
  const std::string wide = yaml;
  yaml.replace(yaml.find("hidden: [16]"), 12, "hidden: [24]");
  dir.write("part/resolved.yaml", yaml);
  CHECK(resume_error() == "checkpoint " + ckpt +
                              ": parameter 'fc0.weight' is f32 (16, 784) in "
                              "the checkpoint but f32 (24, 784) in the model");
  CHECK(read_text(part + "/metrics.csv") == metrics);
}
