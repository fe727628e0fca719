// cpu::rule_update_f32 / rule_norms_f32 (kernels/cpu/optim_update.h), the
// 32-bit twins of the fused blockwise kernels, against the per-element
// reference formulas of kernels/ref/optim_blockwise.h: bit for bit, every
// rule, odd sizes, above and below the OpenMP threshold.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/philox.h"
#include "core/tensor.h"
#include "kernels/cpu/optim_update.h"
#include "kernels/ref/optim_blockwise.h"

using namespace kbit;
using cpu::BlockwiseRule;

namespace {

// Norms are sums of n squares in f64 in a different order: relative 1e-12
// is far above the reassociation error and far below any formula slip.
constexpr double kNormRtol = 1e-12;

std::vector<float> randn(int64_t n, uint64_t seed, double std) {
  Philox rng(seed);
  return Tensor::randn({n}, rng, DType::f32, 0.0, std).to_vector<float>();
}

}  // namespace

TEST_CASE("optim_update: rule_update_f32 equals the reference per element") {
  const BlockwiseRule rules[] = {
      BlockwiseRule::momentum, BlockwiseRule::nesterov, BlockwiseRule::lars,
      BlockwiseRule::rmsprop,  BlockwiseRule::adagrad,  BlockwiseRule::lion,
      BlockwiseRule::adam,     BlockwiseRule::lamb};
  for (BlockwiseRule rule : rules) {
    for (int64_t n : {1, 37, 1000, 70001}) {
      for (int64_t step : {1, 3}) {
        INFO(cpu::blockwise_rule_name(rule), " n ", n, " step ", step);
        cpu::BlockwiseHyper h;
        h.lr = 0.01f;
        h.weight_decay = 0.1f;
        h.step = step;
        h.update_scale = 0.7f;
        h.decoupled = step == 1;
        std::vector<float> p = randn(n, 1, 1.0), g = randn(n, 2, 0.1);
        std::vector<float> s1 = randn(n, 3, 0.05), s2 = randn(n, 4, 0.01);
        for (float& v : s2) v = v * v;  // non-negative second moments
        if (rule == BlockwiseRule::rmsprop || rule == BlockwiseRule::adagrad) {
          for (float& v : s1) v = v * v;
        }
        std::vector<float> rp = p, rs1 = s1, rs2 = s2;

        const cpu::BlockwiseScalars k = cpu::blockwise_scalars(rule, h);
        double usq = 0, psq = 0;
        for (int64_t i = 0; i < n; ++i) {
          float u = 0, a = rs1[size_t(i)], b = rs2[size_t(i)];
          float np =
              ref::rule_element(rule, k, rp[size_t(i)], g[size_t(i)], a, b, u);
          usq += double(u) * u;
          psq += double(rp[size_t(i)]) * rp[size_t(i)];
          rp[size_t(i)] = np;
          rs1[size_t(i)] = a;
          rs2[size_t(i)] = b;
        }
        if (rule == BlockwiseRule::lamb || rule == BlockwiseRule::lars) {
          cpu::BlockwiseNorms nm = cpu::rule_norms_f32(
              rule, h, p.data(), g.data(), s1.data(), s2.data(), n);
          CHECK(nm.update_sq == doctest::Approx(usq).epsilon(kNormRtol));
          CHECK(nm.param_sq == doctest::Approx(psq).epsilon(kNormRtol));
        }
        cpu::rule_update_f32(rule, h, p.data(), g.data(), s1.data(), s2.data(),
                             n);
        CHECK(p == rp);
        CHECK(s1 == rs1);
        if (cpu::blockwise_num_states(rule) == 2) CHECK(s2 == rs2);
      }
    }
  }
}
