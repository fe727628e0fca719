// build/train on gpt configs as a separate process: a SIGKILL in the
// middle of writing a checkpoint (made deterministic by the test hook
// KBIT_TEST_KILL_IN_CHECKPOINT, trainer/checkpoint.cpp) leaves the previous
// checkpoint readable and --resume continues with identical losses; SIGINT
// finishes the step, writes checkpoint and summary and exits 130; bad input
// exits 2 with one message and no folder or changed file.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "trainer/checkpoint.h"
#include "trainer/gpt_fixture.h"

namespace fs = std::filesystem;
using kbit::test::gpt_metrics_losses;
using kbit::test::read_text;
using kbit::test::TempDir;
using kbit::test::tiny_corpus;
using kbit::test::tiny_gpt_config;

namespace {

const std::string kTrain = std::string(KBIT_BINARY_DIR) + "/train";
// How long the SIGINT test waits for the child's first progress line.
constexpr auto kStartTimeout = std::chrono::seconds(60);

struct Result {
  int exit_code = -1;  // the exit status, or 128 + signal when killed
  std::string err;     // stderr
};

// Runs `env` build/train `args` inside `dir` (runs/ lands there).
Result run_train(const TempDir& dir, const std::string& args,
                 const std::string& env = "") {
  REQUIRE_MESSAGE(fs::exists(kTrain), kTrain, " is missing: build all targets");
  const std::string err = dir / "stderr.txt";
  // exec: the shell becomes train, so a signal shows in the status.
  const std::string cmd = "cd '" + dir.path().string() + "' && exec env " +
                          env + " '" + kTrain + "' " + args + " 2>'" + err +
                          "' >/dev/null";
  const int status = std::system(cmd.c_str());
  Result r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
  r.err = read_text(err);
  fs::remove(err);
  return r;
}

std::string write_config(const TempDir& dir, const std::string& extra = "") {
  const std::string corpus = dir.write("corpus.txt", tiny_corpus());
  return dir.write("g.yaml", tiny_gpt_config(corpus, 8, extra));
}

}  // namespace

TEST_CASE("train tool gpt: SIGKILL while writing a checkpoint loses nothing") {
  TempDir dir;
  const std::string cfg = write_config(dir, "  checkpoint_every: 2\n");
  Result r = run_train(dir, "g.yaml --out whole");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);

  // The second checkpoint (after step 4) dies half written.
  r = run_train(dir, "g.yaml --out killed", "KBIT_TEST_KILL_IN_CHECKPOINT=2");
  CHECK(r.exit_code == 128 + SIGKILL);
  int partial = 0;
  for (const auto& e : fs::directory_iterator(dir / "killed")) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".checkpoint.bin.tmp.", 0) != 0) continue;
    ++partial;
    // Half of a checkpoint of the same layout as the step-2 one.
    CHECK(fs::file_size(e.path()) ==
          fs::file_size(dir / "killed/checkpoint.bin") / 2);
  }
  CHECK(partial == 1);  // the write was cut short, not skipped
  const kbit::Checkpoint c =
      kbit::read_checkpoint(dir / "killed/checkpoint.bin");
  CHECK(c.counter("", "step") == 2);

  r = run_train(dir, "--resume killed");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.err.find("resumed at step 2") != std::string::npos);
  CHECK(gpt_metrics_losses(dir / "killed") ==
        gpt_metrics_losses(dir / "whole"));
  CHECK(read_text(dir / "killed/summary.json")
            .find("\"status\": \"completed\"") != std::string::npos);
}

TEST_CASE("train tool gpt: SIGINT writes checkpoint and summary, exits 130") {
  TempDir dir;
  write_config(dir, "  checkpoint_every: 0\n");
  const std::string err = dir / "stderr.txt";
  REQUIRE(fs::exists(kTrain));
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::chdir(dir.path().c_str()) != 0) ::_exit(127);
    int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::execl(kTrain.c_str(), kTrain.c_str(), "g.yaml", "--out", "run", "--set",
            "train.max_steps=100000", nullptr);
    ::_exit(127);
  }
  // Wait for the first progress line, then interrupt.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (read_text(err).find("\nstep ") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const std::string text = read_text(err);
  CAPTURE(text);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(text.find("interrupted after step ") != std::string::npos);
  CHECK(text.find("continue with: train --resume run") != std::string::npos);
  const std::string summary = read_text(dir / "run/summary.json");
  CHECK(summary.find("\"status\": \"interrupted\"") != std::string::npos);
  const kbit::Checkpoint c = kbit::read_checkpoint(dir / "run/checkpoint.bin");
  CHECK(summary.find(kbit::str("\"steps\": ", c.counter("", "step"), ",")) !=
        std::string::npos);
  CHECK(c.counter("", "step") >= 1);
}

TEST_CASE("train tool gpt: bad corpus or checkpoint exits 2, changes nothing") {
  TempDir dir;
  write_config(dir);
  // The default corpus, not prepared in this cache.
  Result r = run_train(dir, "g.yaml --set data.dataset=kjv --set data.path=",
                       "KBIT_CACHE='" + (dir / "cache") + "'");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("the KJV corpus is not prepared in") != std::string::npos);
  CHECK(r.err.find("scripts/prepare_kjv.sh") != std::string::npos);
  CHECK(!fs::exists(dir / "runs"));

  dir.write("empty.txt", "");
  r = run_train(dir, "g.yaml --set data.path=empty.txt");
  CHECK(r.exit_code == 2);
  CHECK(r.err ==
        "--set data.path=empty.txt: data.path: text empty.txt: empty (0 "
        "bytes)\n");
  CHECK(!fs::exists(dir / "runs"));

  // A truncated checkpoint: refused, the run folder stays as it was.
  r = run_train(dir, "g.yaml --out run --set train.stop_at_step=3");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const std::string ckpt = read_text(dir / "run/checkpoint.bin");
  dir.write("run/checkpoint.bin", ckpt.substr(0, ckpt.size() - 9));
  const std::string metrics = read_text(dir / "run/metrics.csv");
  const std::string summary = read_text(dir / "run/summary.json");
  r = run_train(dir, "--resume run");
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("checkpoint run/checkpoint.bin: truncated", 0) == 0);
  CHECK(read_text(dir / "run/metrics.csv") == metrics);
  CHECK(read_text(dir / "run/summary.json") == summary);
}
