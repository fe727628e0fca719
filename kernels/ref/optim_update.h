// Reference optimizer updates: the textbook formulas as plain loops, in f32
// like the fused kernels (the oracle of kernels/cpu/optim_update.h; same
// arguments). Hyperparameters such as 1 - beta are formed in double and
// rounded to f32 once, as the fused kernels do.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cpu/optim_update.h"

namespace kbit::ref {

inline void adam_update(const cpu::AdamHyper& h, float* p, const float* g,
                        float* m, float* v, int64_t n) {
  float b1 = float(h.beta1), b2 = float(h.beta2);
  float one_minus_b1 = float(1.0 - h.beta1);
  float one_minus_b2 = float(1.0 - h.beta2);
  float bc1 = float(1.0 - std::pow(h.beta1, double(h.step)));
  float bc2 = float(1.0 - std::pow(h.beta2, double(h.step)));
  float lr = float(h.lr), wd = float(h.weight_decay), eps = float(h.eps);
  for (int64_t i = 0; i < n; ++i) {
    float grad = h.decoupled ? g[i] : g[i] + wd * p[i];
    m[i] = b1 * m[i] + one_minus_b1 * grad;
    v[i] = b2 * v[i] + one_minus_b2 * grad * grad;
    float m_hat = m[i] / bc1;
    float v_hat = v[i] / bc2;
    if (h.decoupled) p[i] -= lr * wd * p[i];
    p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

inline void sgd_update(const cpu::SgdHyper& h, float* p, const float* g,
                       float* b, int64_t n) {
  float lr = float(h.lr), mu = float(h.momentum);
  float wd = float(h.weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    float grad = g[i] + wd * p[i];
    if (b == nullptr) {
      p[i] -= lr * grad;
      continue;
    }
    b[i] = mu * b[i] + grad;
    p[i] -= lr * (h.nesterov ? grad + mu * b[i] : b[i]);
  }
}

}  // namespace kbit::ref
