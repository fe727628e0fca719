// Fused optimizer updates: the OpenMP driver and the rules' constructors
// (the math is in optim_update.h).
#include "kernels/cpu/optim_update.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace kbit::cpu {
namespace {

// Below this many elements one thread does the whole update: the fork costs
// more than the loop (about 2^15 elements, as for every kbit loop).
constexpr int64_t kParallelThreshold = int64_t(1) << 15;
// Elements per OpenMP work item: 64 KiB per f32 stream, a few streams fit L2.
constexpr int64_t kChunk = int64_t(1) << 14;

}  // namespace

AdamRule::AdamRule(const AdamHyper& h)
    : beta1_(float(h.beta1)),
      beta2_(float(h.beta2)),
      one_minus_beta1_(float(1.0 - h.beta1)),
      one_minus_beta2_(float(1.0 - h.beta2)),
      eps_(float(h.eps)),
      l2_(h.decoupled ? 0.f : float(h.weight_decay)),
      decay_(h.decoupled ? float(h.lr * h.weight_decay) : 0.f) {
  KBIT_CHECK(h.step >= 1, "[adam_update] expected step >= 1, got ", h.step);
  double bc1 = 1.0 - std::pow(h.beta1, double(h.step));
  double bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  step_size_ = float(h.lr / bc1);
  inv_sqrt_bc2_ = float(1.0 / std::sqrt(bc2));
}

MomentumRule::MomentumRule(const SgdHyper& h)
    : lr_(float(h.lr)),
      momentum_(float(h.momentum)),
      wd_(float(h.weight_decay)),
      nesterov_(h.nesterov) {}

SgdRule::SgdRule(const SgdHyper& h)
    : lr_(float(h.lr)), wd_(float(h.weight_decay)) {}

template <typename Rule>
void fused_update(const Rule& rule, float* p, const float* g,
                  const StatePtrs<Rule>& s, int64_t n) {
  if (n < kParallelThreshold) {
    update_range(rule, p, g, s, 0, n);
    return;
  }
  int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = c * kChunk;
    update_range(rule, p, g, s, begin, std::min(n, begin + kChunk));
  }
}

template void fused_update(const AdamRule&, float*, const float*,
                           const StatePtrs<AdamRule>&, int64_t);
template void fused_update(const MomentumRule&, float*, const float*,
                           const StatePtrs<MomentumRule>&, int64_t);
template void fused_update(const SgdRule&, float*, const float*,
                           const StatePtrs<SgdRule>&, int64_t);

void adam_update(const AdamHyper& h, float* p, const float* g, float* m,
                 float* v, int64_t n) {
  fused_update(AdamRule(h), p, g, {m, v}, n);
}

void sgd_update(const SgdHyper& h, float* p, const float* g, float* b,
                int64_t n) {
  KBIT_CHECK((b == nullptr) == (h.momentum == 0.0),
             "[sgd_update] expected a momentum buffer exactly when momentum "
             "is not 0, got momentum ",
             h.momentum, " and ", b ? "a buffer" : "no buffer");
  if (b) {
    fused_update(MomentumRule(h), p, g, {b}, n);
  } else {
    fused_update(SgdRule(h), p, g, {}, n);
  }
}

}  // namespace kbit::cpu
