// Embedding, LayerNorm and StableEmbedding: init, shapes, f64 gradient
// checks, and StableEmbedding's forced 32-bit optimizer state.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "models/embedding.h"
#include "optim/rule_optimizer.h"
#include "support/gradcheck.h"

using namespace kbit;

TEST_CASE("models: StableEmbedding init, shapes and names") {
  Philox rng(5);
  StableEmbedding e(300, 40, rng);
  std::vector<NamedTensor> np = e.named_parameters();
  REQUIRE(np.size() == 3);
  CHECK(np[0].first == "weight");
  CHECK(np[1].first == "norm.weight");
  CHECK(np[2].first == "norm.bias");
  // Xavier-uniform: |w| <= sqrt(6 / (V + C)), and the sample fills it.
  const double a = std::sqrt(6.0 / 340.0);
  double lo = 0, hi = 0;
  for (float w : e.weight().to_vector<float>()) {
    lo = std::min(lo, double(w));
    hi = std::max(hi, double(w));
  }
  CHECK(hi <= a);
  CHECK(lo >= -a);
  CHECK(hi > 0.99 * a);
  CHECK(lo < -0.99 * a);

  // The output rows are layer-normalized (zero mean, unit variance).
  Tensor idx = Tensor::from_vector<int64_t>({3, 299, 0, 3}, {2, 2});
  Tensor y = e.forward(idx);
  CHECK(y.shape() == Shape{2, 2, 40});
  std::vector<float> v = y.to_vector<float>();
  for (int r = 0; r < 4; ++r) {
    double m = 0, s = 0;
    for (int c = 0; c < 40; ++c) m += v[size_t(r * 40 + c)] / 40.0;
    for (int c = 0; c < 40; ++c) {
      s += std::pow(v[size_t(r * 40 + c)] - m, 2) / 40.0;
    }
    CHECK(std::fabs(m) < 1e-5);
    // eps 1e-5 against a row variance of about a^2 / 3 = 0.0059 leaves
    // var / (var + eps) ~ 1 - 0.0017.
    CHECK(std::fabs(s - 1.0) < 5e-3);
  }
}

TEST_CASE("models: Embedding, LayerNorm and StableEmbedding gradients (f64)") {
  Philox rng(6);
  StableEmbedding e(7, 5, rng, DType::f64);
  Tensor idx = Tensor::from_vector<int64_t>({1, 6, 1, 0, 3}, {5});
  std::vector<Tensor> inputs = e.parameters();
  // A non-trivial affine part, so its gradient paths are exercised too.
  Philox r2(8);
  for (size_t k = 1; k < inputs.size(); ++k) {
    double* p = inputs[k].data<double>();
    for (int64_t i = 0; i < inputs[k].numel(); ++i) p[i] += 0.3 * double(i + k);
  }
  auto f = [&](const std::vector<Tensor>&) { return e.forward(idx); };
  test::check_gradients(f, inputs, "stable_embedding");

  Embedding plain(7, 5, rng, DType::f64);
  auto g = [&](const std::vector<Tensor>&) { return plain.forward(idx); };
  test::check_gradients(g, plain.parameters(), "embedding");
}

TEST_CASE("models: StableEmbedding keeps a 32-bit state under bits 8") {
  Philox rng(9);
  // 256 x 64 = 16384 elements: 8-bit by size, 32-bit by force.
  StableEmbedding e(256, 64, rng);
  OptimConfig c;
  c.bits = 8;
  c.min_8bit_size = 0;  // even the LayerNorm gets 8-bit states
  auto opt = make_optimizer(e, c);
  auto& ro = dynamic_cast<RuleOptimizer&>(*opt);
  CHECK(ro.settings(0).bits == 32);  // weight
  CHECK(ro.settings(1).bits == 8);   // norm.weight
  Tensor idx = Tensor::from_vector<int64_t>({1, 2, 3}, {3});
  Tensor loss = sum(e.forward(idx) * e.forward(idx));
  backward(loss);
  REQUIRE(opt->step());
  REQUIRE(ro.state(0));
  for (const StateBuffer& b : ro.state(0)->buffers) {
    CHECK(b.kind() == StateBuffer::Kind::f32);
  }
  CHECK(ro.state(1)->buffers[0].kind() == StateBuffer::Kind::q8);
}
