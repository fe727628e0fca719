// train_gpt in the process: the run folder's files, bit-identical resumes
// (32- and 8-bit states), gradient accumulation against one large batch,
// the stop flag (SIGINT's path), train.max_seconds, and the refusals that
// must leave no folder and change no file.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "models/gpt.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/gpt_fixture.h"
#include "trainer/report.h"
#include "trainer/train_gpt.h"

using namespace kbit;
using kbit::test::gpt_metrics_losses;
using kbit::test::read_text;
using kbit::test::TempDir;
using kbit::test::tiny_corpus;
using kbit::test::tiny_gpt_config;
namespace fs = std::filesystem;

namespace {

// Loss and gradient of grad_accum k x B against one batch of k B: the same
// windows summed in another order, so equal up to f32 rounding.
constexpr double kAccumLossTol = 1e-5;    // relative
constexpr double kAccumCosineTol = 1e-5;  // 1 - cosine of the two updates
constexpr double kAccumNormTol = 1e-4;    // relative norm difference

GptRunSummary run(const Config& config, const std::string& out,
                  const std::string& resume = "",
                  const volatile std::sig_atomic_t* stop = nullptr,
                  std::function<void(const std::string&)> log = {}) {
  RunOptions options;
  options.out = out;
  options.resume = resume;
  options.stop = stop;
  options.log = std::move(log);
  return train_gpt(config, options);
}

Config load(const TempDir& dir, int bits, const std::string& extra = "",
            const std::vector<std::string>& overrides = {}) {
  const std::string corpus = dir.write("corpus.txt", tiny_corpus());
  return Config::load(dir.write("g.yaml", tiny_gpt_config(corpus, bits, extra)),
                      overrides);
}

std::string user_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// The parameters of a checkpoint as f32 values, concatenated in order.
std::vector<float> checkpoint_values(const std::string& path) {
  std::vector<float> out;
  for (const CheckpointTensor& t : read_checkpoint(path).tensors) {
    const float* p = reinterpret_cast<const float*>(t.bytes.data());
    out.insert(out.end(), p, p + t.bytes.size() / sizeof(float));
  }
  return out;
}

void check_resume(int bits) {
  TempDir dir;
  const Config config = load(dir, bits);
  const GptRunSummary whole = run(config, dir / "whole");
  CHECK(whole.status == "completed");

  const Config stop = load(dir, bits, "", {"train.stop_at_step=5"});
  const GptRunSummary part = run(stop, dir / "part");
  CHECK(part.status == "stopped");
  CHECK(part.steps == 5);
  const GptRunSummary rest =
      run(load_resume_config(dir / "part", {}), "", dir / "part");
  CHECK(rest.status == "completed");
  CHECK(rest.steps == 8);
  CHECK(gpt_metrics_losses(dir / "part") == gpt_metrics_losses(dir / "whole"));
  CHECK(rest.final_val_loss == whole.final_val_loss);
  CHECK(rest.final_train_loss == whole.final_train_loss);
  CHECK(checkpoint_values(dir / "part/checkpoint.bin") ==
        checkpoint_values(dir / "whole/checkpoint.bin"));
  CHECK(read_checkpoint(dir / "part/checkpoint.bin").optimizer_state ==
        read_checkpoint(dir / "whole/checkpoint.bin").optimizer_state);
}

}  // namespace

TEST_CASE("train_gpt: a tiny run writes resolved.yaml, metrics, summary") {
  TempDir dir;
  std::vector<std::string> lines;
  const GptRunSummary s =
      run(load(dir, 32), dir / "run", "", nullptr,
          [&](const std::string& line) { lines.push_back(line); });
  CHECK(s.status == "completed");
  CHECK(s.steps == 8);
  CHECK(s.tokens == 8 * 4 * 16);
  CHECK(std::isfinite(s.final_val_loss));
  CHECK(s.final_val_loss < std::log(256.0) + 0.5);  // not diverged
  CHECK(s.param_count > 0);
  CHECK(s.tokens_per_second > 0);
  for (const char* f :
       {"resolved.yaml", "metrics.csv", "checkpoint.bin", "summary.json"}) {
    CHECK_MESSAGE(fs::exists(dir / ("run/" + std::string(f))), f);
  }
  const std::string metrics = read_text(dir / "run/metrics.csv");
  CHECK(metrics.rfind(std::string(MetricsCsv::gpt_header()) + "\n", 0) == 0);
  // 8 logging rows, evaluations at 3 and 6, and the final one at 8.
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 1 + 8 + 3);
  const std::string summary = read_text(dir / "run/summary.json");
  for (const char* key :
       {"\"status\": \"completed\"", "\"final_val_loss\"",
        "\"val_loss_sample\"", "\"tokens_per_second\"",
        "\"optimizer_state_bytes\"", "\"param_count\"", "\"wall_seconds\"",
        "\"skipped_steps\"", "\"run_dir\"", "\"peak_bytes\""}) {
    CHECK_MESSAGE(summary.find(key) != std::string::npos, key);
  }
  CHECK(read_checkpoint(dir / "run/checkpoint.bin").counter("", "step") == 8);
  // The progress line: step/total, loss, lr, tokens/s, ms/step, ETA, MB.
  bool progress = false;
  for (const std::string& l : lines) {
    if (l.rfind("step 8/8 | loss ", 0) != 0) continue;
    progress = l.find(" tok/s | ") != std::string::npos &&
               l.find(" ms/step | ETA ") != std::string::npos &&
               l.find(" MB") != std::string::npos &&
               l.find("| lr ") != std::string::npos;
  }
  CHECK(progress);
}

TEST_CASE("train_gpt: resume gives bit-identical losses, 32-bit states") {
  check_resume(32);
}

TEST_CASE("train_gpt: resume gives bit-identical losses, 8-bit states") {
  check_resume(8);
}

TEST_CASE("train_gpt: grad_accum k x batch B matches one batch of k B") {
  // Plain SGD (no momentum, decay or clipping) at a constant lr: the update
  // of step 1 is -lr times the gradient, so comparing the parameters after
  // one step compares the gradients.
  const std::vector<std::string> common = {
      "optim.name=sgd",       "optim.momentum=0",
      "optim.weight_decay=0", "optim.clip_grad_norm=0",
      "optim.overrides=[]",   "train.max_steps=1",
      "train.warmup_steps=0", "train.schedule=constant"};
  TempDir dir;
  std::vector<std::string> big = common, small = common;
  big.push_back("train.batch_size=8");
  small.push_back("train.batch_size=4");
  small.push_back("train.grad_accum=2");
  const GptRunSummary a = run(load(dir, 32, "", big), dir / "big");
  const GptRunSummary b = run(load(dir, 32, "", small), dir / "small");
  CHECK(a.tokens == b.tokens);
  CHECK(std::abs(a.final_train_loss - b.final_train_loss) <=
        kAccumLossTol * std::abs(a.final_train_loss));

  Philox init(1);  // the config's seed: the initial parameters
  GPT model(gpt_config_from(load(dir, 32)), init);
  std::vector<float> p0;
  for (const auto& [name, t] : model.named_parameters()) {
    const std::vector<float> v = t.to_vector<float>();
    p0.insert(p0.end(), v.begin(), v.end());
  }
  const std::vector<float> pa = checkpoint_values(dir / "big/checkpoint.bin");
  const std::vector<float> pb = checkpoint_values(dir / "small/checkpoint.bin");
  REQUIRE(pa.size() == p0.size());
  REQUIRE(pb.size() == p0.size());
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < p0.size(); ++i) {
    const double da = double(pa[i]) - p0[i], db = double(pb[i]) - p0[i];
    dot += da * db, na += da * da, nb += db * db;
  }
  REQUIRE(na > 0);
  CHECK(1 - dot / std::sqrt(na * nb) <= kAccumCosineTol);
  CHECK(std::abs(std::sqrt(na) - std::sqrt(nb)) <=
        kAccumNormTol * std::sqrt(na));
}

TEST_CASE("train_gpt: the stop flag finishes the step and checkpoints") {
  TempDir dir;
  volatile std::sig_atomic_t stop = 0;
  const GptRunSummary s =
      run(load(dir, 32), dir / "run", "", &stop, [&](const std::string& l) {
        if (l.rfind("step 3/8 ", 0) == 0) stop = 1;
      });
  CHECK(s.status == "interrupted");
  CHECK(s.steps == 3);
  CHECK(
      read_text(dir / "run/summary.json").find("\"status\": \"interrupted\"") !=
      std::string::npos);
  CHECK(read_checkpoint(dir / "run/checkpoint.bin").counter("", "step") == 3);
  // It resumes to the same end as a run never stopped.
  const GptRunSummary rest =
      run(load_resume_config(dir / "run", {}), "", dir / "run");
  CHECK(rest.status == "completed");
  run(load(dir, 32), dir / "whole");
  CHECK(gpt_metrics_losses(dir / "run") == gpt_metrics_losses(dir / "whole"));
}

TEST_CASE("train_gpt: train.max_seconds stops with status time_limit") {
  TempDir dir;
  const GptRunSummary s =
      run(load(dir, 32, "", {"train.max_seconds=1e-9"}), dir / "run");
  CHECK(s.status == "time_limit");
  CHECK(s.steps == 1);
  CHECK(std::isfinite(s.final_val_loss));
  CHECK(
      read_text(dir / "run/summary.json").find("\"status\": \"time_limit\"") !=
      std::string::npos);
}

TEST_CASE("train_gpt: bad data, shapes and checkpoints are refused first") {
  TempDir dir;
  const std::string corpus = dir.write("corpus.txt", tiny_corpus());
  auto refused = [&](const std::string& yaml,
                     const std::vector<std::string>& overrides) {
    const Config c = Config::load(dir.write("x.yaml", yaml), overrides);
    const std::string e = user_error([&] { run(c, dir / "out"); });
    CHECK_MESSAGE(!fs::exists(dir / "out"), e);
    return e;
  };
  const std::string good = tiny_gpt_config(corpus, 32);

  // The default corpus is not prepared: the message says how.
  const char* old_cache = std::getenv("KBIT_CACHE");
  const std::string saved = old_cache ? old_cache : "";
  ::setenv("KBIT_CACHE", (dir / "cache").c_str(), 1);
  std::string e = refused(good, {"data.dataset=kjv", "data.path="});
  if (old_cache) {
    ::setenv("KBIT_CACHE", saved.c_str(), 1);
  } else {
    ::unsetenv("KBIT_CACHE");
  }
  CHECK(e.find("the KJV corpus is not prepared in " + (dir / "cache") +
               "/kjv") != std::string::npos);
  CHECK(e.find("scripts/prepare_kjv.sh") != std::string::npos);

  e = refused(good, {"data.path="});
  CHECK(e ==
        "--set data.path=: data.path: expected a text file or a "
        "corpus folder for data.dataset text, got none");
  const std::string empty = dir.write("empty.txt", "");
  e = refused(good, {"data.path=" + empty});
  CHECK(e == "--set data.path=" + empty + ": data.path: text " + empty +
                 ": empty (0 bytes)");
  e = refused(good, {"data.path=" + (dir / "nope.txt")});
  CHECK(e.find(": not found") != std::string::npos);
  e = refused(good, {"model.d_model=18", "model.n_head=4"});
  CHECK(e ==
        "--set model.d_model=18: model.d_model: expected a multiple of "
        "model.n_head (4), got 18");

  // Resumes: a checkpoint of another width, a truncated one, a corrupted
  // one. Nothing in the run folder changes.
  run(Config::load(dir.write("a.yaml", good), {"train.stop_at_step=2"}),
      dir / "a");
  run(Config::load(dir.write("b.yaml", good),
                   {"train.stop_at_step=2", "model.d_model=24"}),
      dir / "b");
  const std::string metrics = read_text(dir / "a/metrics.csv");
  const std::string summary = read_text(dir / "a/summary.json");
  const std::string own = read_text(dir / "a/checkpoint.bin");
  auto resume_error = [&](const std::string& checkpoint) {
    dir.write("a/checkpoint.bin", checkpoint);
    e = user_error(
        [&] { run(load_resume_config(dir / "a", {}), "", dir / "a"); });
    CHECK(read_text(dir / "a/metrics.csv") == metrics);
    CHECK(read_text(dir / "a/summary.json") == summary);
    return e;
  };
  const std::string path = dir / "a/checkpoint.bin";
  e = resume_error(read_text(dir / "b/checkpoint.bin"));
  CHECK(
      e.rfind("checkpoint " + path +
                  ": parameter 'wte.weight' is f32 "
                  "(256, 24) in the checkpoint but f32 (256, 16) in the model",
              0) == 0);
  e = resume_error(own.substr(0, own.size() / 2));
  CHECK(e.rfind("checkpoint " + path + ": truncated", 0) == 0);
  std::string flipped = own;
  flipped[flipped.size() / 2] ^= 0x20;
  e = resume_error(flipped);
  CHECK(e == "checkpoint " + path +
                 ": corrupted (the checksum does not match the contents)");
  // The untouched checkpoint still resumes.
  dir.write("a/checkpoint.bin", own);
  CHECK(run(load_resume_config(dir / "a", {}), "", dir / "a").status ==
        "completed");
}

TEST_CASE("train_gpt: a non-finite loss stops the run, keeping its files") {
  TempDir dir;
  const Config c =
      load(dir, 32, "",
           {"optim.lr=1e30", "optim.clip_grad_norm=0", "train.warmup_steps=0"});
  const std::string e = user_error([&] { run(c, dir / "run"); });
  CHECK(e.find(": the training loss is ") != std::string::npos);
  CHECK(e.find(dir / "run") != std::string::npos);
  CHECK(read_text(dir / "run/summary.json")
            .find("\"status\": \"non_finite_loss\"") != std::string::npos);
}
