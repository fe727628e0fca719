// Sampling from a GPT (models/generate.h): the byte draw on hand-made
// logits, then generate() on a small random-weight GPT: greedy is
// deterministic, top-k 1 is greedy, a prompt longer than the context gives
// what its last block_size bytes give, and bad options throw. Then
// `kbit sample` on a run folder written here: its output is the library's,
// a long prompt gives one warning line, and bad folders exit 2.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "trainer/checkpoint.h"
#include "trainer/temp_dir.h"

using namespace kbit;

namespace {

// A GPT small enough that 40 sampled bytes take milliseconds.
GPT tiny_gpt(uint64_t seed) {
  GPTConfig c;
  c.block_size = 8;
  c.n_layer = 1;
  c.n_head = 2;
  c.d_model = 16;
  Philox rng(seed);
  return GPT(c, rng);
}

}  // namespace

TEST_CASE("generate: sample_byte draws by the inverse CDF") {
  // p = (1/4, 3/4) at temperature 1: u below 1/4 picks 0, above picks 1.
  const std::vector<float> two = {0.f, float(std::log(3.0))};
  CHECK(sample_byte(two, 1.0, 0, 0.2) == 0);
  CHECK(sample_byte(two, 1.0, 0, 0.3) == 1);
  CHECK(sample_byte(two, 1.0, 0, 0.999999) == 1);
  // Temperature 0.5 squares the odds: p = (1/10, 9/10).
  CHECK(sample_byte(two, 0.5, 0, 0.09) == 0);
  CHECK(sample_byte(two, 0.5, 0, 0.11) == 1);
  // Greedy takes the largest logit, the lowest byte on ties.
  CHECK(sample_byte({1.f, 5.f, 5.f, 2.f}, 0.0, 0, 0.7) == 1);
}

TEST_CASE("generate: top-k keeps only the k most likely bytes") {
  const std::vector<float> logits = {0.5f, 3.f, -1.f, 2.f, 1.f};
  std::set<int> seen;
  for (int i = 0; i < 100; ++i) {
    const double u = (i + 0.5) / 100.0;
    seen.insert(sample_byte(logits, 1.0, 2, u));
    CHECK(sample_byte(logits, 1.0, 1, u) == 1);  // top-1 is greedy
  }
  CHECK(seen == std::set<int>{1, 3});
}

TEST_CASE("generate: greedy sampling is deterministic and top-k 1 is greedy") {
  const GPT model = tiny_gpt(7);
  SampleOptions greedy;
  greedy.tokens = 40;
  greedy.temperature = 0;
  const std::string a = generate(model, "In the beginning", greedy);
  CHECK(a.size() == 40);
  CHECK(generate(model, "In the beginning", greedy) == a);

  SampleOptions top1 = greedy;
  top1.temperature = 1.0;
  top1.top_k = 1;
  top1.seed = 123;
  CHECK(generate(model, "In the beginning", top1) == a);

  // Sampling at temperature 1 follows the seed.
  SampleOptions warm;
  warm.tokens = 40;
  warm.seed = 5;
  const std::string s = generate(model, "In", warm);
  CHECK(s.size() == 40);
  CHECK(generate(model, "In", warm) == s);
  warm.seed = 6;
  CHECK(generate(model, "In", warm) != s);  // 40 bytes; a tie is ~0 odds
}

TEST_CASE("generate: a long prompt is cropped to the last block_size bytes") {
  const GPT model = tiny_gpt(3);
  SampleOptions o;
  o.tokens = 12;
  o.temperature = 0;
  const std::string prompt = "and God said, Let there be light";  // 32 > 8
  const std::string tail = prompt.substr(prompt.size() - 8);
  CHECK(generate(model, prompt, o) == generate(model, tail, o));
  CHECK(generate(model, "", o).size() == 12);  // starts from "\n"
  o.tokens = 0;
  CHECK(generate(model, prompt, o).empty());
}

TEST_CASE("generate: bad options throw") {
  const GPT model = tiny_gpt(1);
  SampleOptions o;
  o.tokens = -1;
  CHECK_THROWS_AS(generate(model, "a", o), Error);
  o.tokens = 1;
  o.temperature = -0.5;
  CHECK_THROWS_AS(generate(model, "a", o), Error);
  o.temperature = NAN;
  CHECK_THROWS_AS(generate(model, "a", o), Error);
  o.temperature = 1;
  o.top_k = -2;
  CHECK_THROWS_AS(generate(model, "a", o), Error);
}

// ---- kbit sample (build/kbit from the outside) ----

namespace {

const std::string kKbit = std::string(KBIT_BINARY_DIR) + "/kbit";

struct ToolRun {
  int exit_code = -1;
  std::string out, err;
};

ToolRun run_kbit(const kbit::test::TempDir& dir, const std::string& args) {
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd =
      "'" + kKbit + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  ToolRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = kbit::test::read_text(out);
  r.err = kbit::test::read_text(err);
  return r;
}

const char* kTinyYaml =
    "model:\n"
    "  type: gpt\n"
    "  n_layer: 1\n"
    "  n_head: 2\n"
    "  d_model: 16\n"
    "  block_size: 8\n";

// A run folder as train writes it: resolved.yaml and checkpoint.bin of
// tiny_gpt(seed).
void write_run(const kbit::test::TempDir& dir, const std::string& name,
               const GPT& model) {
  dir.write(name + "/resolved.yaml", kTinyYaml);
  CheckpointMeta meta;
  meta.config_text = kTinyYaml;
  save_checkpoint(dir / (name + "/checkpoint.bin"), meta,
                  model.named_parameters(), "");
}

int count_lines(const std::string& text) {
  return int(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("generate: kbit sample prints the prompt and the model's bytes") {
  REQUIRE_MESSAGE(std::filesystem::exists(kKbit), kKbit,
                  " is missing: build all targets");
  kbit::test::TempDir dir;
  const GPT model = tiny_gpt(11);
  write_run(dir, "run", model);
  SampleOptions greedy;
  greedy.tokens = 16;
  greedy.temperature = 0;

  ToolRun r = run_kbit(dir, "sample '" + (dir / "run") +
                                "' --prompt 'In the' --tokens 16 "
                                "--temperature 0");
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  CHECK(r.out == "In the" + generate(model, "In the", greedy) + "\n");

  // Longer than block_size 8: one warning line, the last 8 bytes kept.
  const std::string prompt = "And God saw the light";
  r = run_kbit(dir, "sample '" + (dir / "run") + "' --prompt '" + prompt +
                        "' --tokens 16 --temperature 0");
  CHECK(r.exit_code == 0);
  CHECK(count_lines(r.err) == 1);
  CHECK(r.err.find("warning: the prompt has 21 bytes, more than the context "
                   "of 8; using its last 8") != std::string::npos);
  const std::string tail = prompt.substr(prompt.size() - 8);
  CHECK(r.out == tail + generate(model, tail, greedy) + "\n");
}

TEST_CASE("generate: kbit sample refuses bad run folders with exit code 2") {
  REQUIRE_MESSAGE(std::filesystem::exists(kKbit), kKbit,
                  " is missing: build all targets");
  kbit::test::TempDir dir;
  write_run(dir, "run", tiny_gpt(2));
  dir.write("mlp/resolved.yaml", "model:\n  type: mlp\n");
  dir.write("mlp/checkpoint.bin", "");
  dir.write("empty/placeholder", "");
  std::string bytes = kbit::test::read_text(dir / "run/checkpoint.bin");
  bytes[bytes.size() / 2] ^= 0x5a;
  dir.write("corrupt/resolved.yaml", kTinyYaml);
  dir.write("corrupt/checkpoint.bin", bytes);
  dir.write("short/resolved.yaml", kTinyYaml);
  dir.write("short/checkpoint.bin", bytes.substr(0, bytes.size() / 3));
  // Another shape: the checkpoint of d_model 16 under a d_model 32 config.
  dir.write("shape/resolved.yaml",
            "model:\n  type: gpt\n  n_layer: 1\n  n_head: 2\n"
            "  d_model: 32\n  block_size: 8\n");
  dir.write("shape/checkpoint.bin",
            kbit::test::read_text(dir / "run/checkpoint.bin"));

  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"sample '" + (dir / "nothing") + "'", "which is not a folder"},
      {"sample '" + (dir / "empty") + "'", "resolved.yaml in the run folder"},
      {"sample '" + (dir / "mlp") + "'", "expected a gpt run"},
      {"sample '" + (dir / "corrupt") + "'", "checkpoint"},
      {"sample '" + (dir / "short") + "'", "checkpoint"},
      {"sample '" + (dir / "shape") + "'", "wte.weight"},
      {"sample '" + (dir / "run") + "' --tokens -3", "--tokens >= 0"},
      {"sample '" + (dir / "run") + "' --temperature hot", "got 'hot'"},
      {"sample '" + (dir / "run") + "' --top-k -1", "--top-k >= 0"},
      {"sample '" + (dir / "run") + "' --topk 3", "unknown option '--topk'"},
      {"sample", "expected one RUN_DIR"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    ToolRun r = run_kbit(dir, c.args);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.out.empty());
  }
}
