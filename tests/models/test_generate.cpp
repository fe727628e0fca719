// Sampling from a GPT (models/generate.h): the byte draw on hand-made
// logits, then generate() on a small random-weight GPT: greedy is
// deterministic, top-k 1 is greedy, a prompt longer than the context gives
// what its last block_size bytes give, and bad options throw.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "models/generate.h"
#include "models/gpt.h"

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
