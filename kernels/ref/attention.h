// Reference causal self-attention: plain loops in double. The oracle of
// kernels/cpu/attention.h (same layouts).
//
// Shapes: B batch, T time, H heads of D channels, C = H * D. qkv (B, T, 3C)
// holds q in columns [0, C), k in [C, 2C), v in [2C, 3C); head h uses
// columns [h D, (h+1) D) of each. out and dout (B, T, C); dqkv (B, T, 3C).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace kbit::ref {

// The attention weights of one (b, h): p (T, T), row t = softmax over
// j <= t of q_t . k_j / sqrt(D), zero for j > t.
template <typename T>
std::vector<double> attention_probs(const T* qkv, int64_t b, int64_t h,
                                    int64_t Tn, int64_t H, int64_t D) {
  const int64_t C = H * D, row = 3 * C;
  const T* q = qkv + b * Tn * row + h * D;
  const T* k = q + C;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> p(size_t(Tn * Tn), 0.0);
  for (int64_t t = 0; t < Tn; ++t) {
    double m = -INFINITY;
    for (int64_t j = 0; j <= t; ++j) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) {
        s += double(q[t * row + d]) * double(k[j * row + d]);
      }
      p[size_t(t * Tn + j)] = s * scale;
      m = std::fmax(m, s * scale);
    }
    double z = 0;
    for (int64_t j = 0; j <= t; ++j) {
      double& e = p[size_t(t * Tn + j)];
      e = std::exp(e - m);
      z += e;
    }
    for (int64_t j = 0; j <= t; ++j) p[size_t(t * Tn + j)] /= z;
  }
  return p;
}

// out (B, T, C): head h of row t = sum_j p[t, j] v_j.
template <typename T>
void causal_attention(const T* qkv, T* out, int64_t B, int64_t Tn, int64_t H,
                      int64_t D) {
  const int64_t C = H * D, row = 3 * C;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> p = attention_probs(qkv, b, h, Tn, H, D);
      const T* v = qkv + b * Tn * row + 2 * C + h * D;
      for (int64_t t = 0; t < Tn; ++t) {
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= t; ++j) {
            o += p[size_t(t * Tn + j)] * double(v[j * row + d]);
          }
          out[(b * Tn + t) * C + h * D + d] = T(o);
        }
      }
    }
  }
}

// dqkv (B, T, 3C) from dout (B, T, C), overwritten:
// dv_j = sum_t p[t, j] do_t; dp[t, j] = do_t . v_j;
// ds[t, j] = p[t, j] (dp[t, j] - sum_i p[t, i] dp[t, i]);
// dq_t = scale sum_j ds[t, j] k_j; dk_j = scale sum_t ds[t, j] q_t.
template <typename T>
void causal_attention_backward(const T* qkv, const T* dout, T* dqkv, int64_t B,
                               int64_t Tn, int64_t H, int64_t D) {
  const int64_t C = H * D, row = 3 * C;
  const double scale = 1.0 / std::sqrt(double(D));
  for (int64_t i = 0; i < B * Tn * row; ++i) dqkv[i] = T(0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> p = attention_probs(qkv, b, h, Tn, H, D);
      const int64_t base = b * Tn * row + h * D;
      const T* q = qkv + base;
      const T* k = q + C;
      const T* v = q + 2 * C;
      T* dq = dqkv + base;
      T* dk = dq + C;
      T* dv = dq + 2 * C;
      const T* go = dout + b * Tn * C + h * D;
      for (int64_t t = 0; t < Tn; ++t) {
        std::vector<double> dp(size_t(t + 1));
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) {
            s += double(go[t * C + d]) * double(v[j * row + d]);
          }
          dp[size_t(j)] = s;
          sum += s * p[size_t(t * Tn + j)];
        }
        for (int64_t j = 0; j <= t; ++j) {
          double pj = p[size_t(t * Tn + j)];
          double ds = pj * (dp[size_t(j)] - sum) * scale;
          for (int64_t d = 0; d < D; ++d) {
            dq[t * row + d] += T(ds * double(k[j * row + d]));
            dk[j * row + d] += T(ds * double(q[t * row + d]));
            dv[j * row + d] += T(pj * double(go[t * C + d]));
          }
        }
      }
    }
  }
}

}  // namespace kbit::ref
