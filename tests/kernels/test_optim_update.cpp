// Fused optimizer updates (kernels/cpu) against the plain reference loops
// (kernels/ref) on odd sizes, over several steps.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "kernels/cpu/optim_update.h"
#include "kernels/ref/optim_update.h"

using namespace kbit;

namespace {

// The fused kernel folds constants differently from the reference (lr/bc1
// and 1/sqrt(bc2) once, FMA contraction): a few f32 ulps apart per step,
// relative 2^-23 ~ 1.2e-7 each. 1e-6 allows ~8 ulps after several steps;
// a wrong formula (a missing bias correction, decay or momentum term) is
// off by 1e-3 or more.
constexpr double kBitClose = 1e-6;
// Sizes: tiny, vector-tail odd, around and above the OpenMP threshold.
const std::vector<int64_t> kSizes = {1, 7, 33, 1000, 32769, 100003};
constexpr int kSteps = 4;

std::vector<float> random_vec(int64_t n, uint64_t seed, float scale) {
  std::vector<float> out(static_cast<size_t>(n));
  Philox rng(seed);
  rng.fill_normal(out.data(), n, 0.f, scale);
  return out;
}

void check_close(const std::vector<float>& a, const std::vector<float>& b,
                 const std::string& what, int64_t n) {
  // Scale: the mean |value|, so that values near 0 after cancellation
  // (m = beta1 m + (1 - beta1) g) are held to the array's magnitude.
  double scale = 0;
  for (float x : b) scale += std::abs(double(x)) / double(b.size());
  int bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double tol = kBitClose * (std::abs(double(b[i])) + scale);
    if (std::abs(double(a[i]) - double(b[i])) > tol && ++bad <= 3) {
      CHECK_MESSAGE(false, what, " n=", n, " i=", i, " fused ", a[i], " ref ",
                    b[i], " diff ", a[i] - b[i]);
    }
  }
  CHECK_MESSAGE(bad == 0, what, " n=", n, ": ", bad, " elements differ");
}

}  // namespace

TEST_CASE("optim_update: fused Adam and AdamW match the reference") {
  for (bool decoupled : {true, false}) {
    for (int64_t n : kSizes) {
      std::vector<float> p = random_vec(n, 1, 1.f), p_ref = p;
      std::vector<float> m(size_t(n), 0.f), v(size_t(n), 0.f);
      std::vector<float> m_ref = m, v_ref = v;
      cpu::AdamHyper h{1e-2, 0.9, 0.99, 1e-8, 0.1, decoupled, 1};
      for (int t = 1; t <= kSteps; ++t) {
        std::vector<float> g = random_vec(n, 100 + t, 0.5f);
        h.step = t;
        cpu::adam_update(h, p.data(), g.data(), m.data(), v.data(), n);
        ref::adam_update(h, p_ref.data(), g.data(), m_ref.data(), v_ref.data(),
                         n);
      }
      std::string what = decoupled ? "adamw" : "adam";
      check_close(p, p_ref, what + " p", n);
      check_close(m, m_ref, what + " m", n);
      check_close(v, v_ref, what + " v", n);
    }
  }
}

TEST_CASE("optim_update: fused SGD (plain, momentum, Nesterov) matches ref") {
  struct Case {
    double momentum;
    bool nesterov;
  };
  for (Case c : {Case{0.0, false}, Case{0.9, false}, Case{0.9, true}}) {
    for (int64_t n : kSizes) {
      std::vector<float> p = random_vec(n, 2, 1.f), p_ref = p;
      std::vector<float> b(size_t(n), 0.f), b_ref = b;
      float* bp = c.momentum > 0 ? b.data() : nullptr;
      float* bp_ref = c.momentum > 0 ? b_ref.data() : nullptr;
      cpu::SgdHyper h{0.05, c.momentum, 0.01, c.nesterov};
      for (int t = 1; t <= kSteps; ++t) {
        std::vector<float> g = random_vec(n, 200 + t, 0.5f);
        cpu::sgd_update(h, p.data(), g.data(), bp, n);
        ref::sgd_update(h, p_ref.data(), g.data(), bp_ref, n);
      }
      check_close(p, p_ref, "sgd p", n);
      check_close(b, b_ref, "sgd b", n);
    }
  }
}

TEST_CASE("optim_update: sgd_update refuses a buffer that does not fit") {
  float p = 1, g = 1, b = 0;
  cpu::SgdHyper h{0.1, 0.0, 0.0, false};
  CHECK_THROWS_AS(cpu::sgd_update(h, &p, &g, &b, 1), Error);
  h.momentum = 0.9;
  CHECK_THROWS_AS(cpu::sgd_update(h, &p, &g, nullptr, 1), Error);
}

TEST_CASE("optim_update: block by block equals the whole-tensor update") {
  // The 8-bit path will run the same rule one block at a time: the result
  // must not depend on how the range is split (bitwise equal).
  constexpr int64_t kBlock = 256;
  int64_t n = 40000 + 77;  // above the OpenMP threshold, a partial block
  std::vector<float> p = random_vec(n, 3, 1.f), p_blk = p;
  std::vector<float> g = random_vec(n, 4, 0.5f);
  std::vector<float> m(size_t(n), 0.1f), v(size_t(n), 0.2f);
  std::vector<float> m_blk = m, v_blk = v;
  cpu::AdamHyper h{1e-3, 0.9, 0.999, 1e-8, 0.01, true, 3};
  cpu::adam_update(h, p.data(), g.data(), m.data(), v.data(), n);
  cpu::AdamRule rule(h);
  for (int64_t b = 0; b < n; b += kBlock) {
    cpu::update_range(rule, p_blk.data(), g.data(),
                      {m_blk.data(), v_blk.data()}, b, std::min(n, b + kBlock));
  }
  CHECK(p == p_blk);
  CHECK(m == m_blk);
  CHECK(v == v_blk);
}
