// Causal attention kernels. One (b, h) pair is one task: its q, k, v are
// strided (T, D) views of qkv, so the products run on them in place. Row
// block [r0, r1) of the scores only needs keys [0, r1): the block GEMMs
// skip the masked triangle above the diagonal blocks, and the diagonal
// blocks are masked by the row softmax, which also zeroes their upper part
// so that the transposed products of the backward pass can read P and dS
// by column blocks.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/gemm.h"

namespace kbit::cpu {
namespace {

// Below this many multiply-adds in all pairs together, one thread runs
// them (the fork would cost more).
constexpr int64_t kParallelMinWork = int64_t(1) << 16;

// C (M, N) = alpha op(A) op(B), single-threaded inside the pair loop.
template <typename T>
void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
        const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.M = M;
  g.N = N;
  g.K = K;
  g.lda = lda;
  g.ldb = ldb;
  g.ldc = ldc;
  g.alpha = alpha;
  gemm(g, A, B, C);
}

// Row s (n) of scores -> softmax over [0, len), zero over [len, n).
template <typename T>
void causal_softmax_row(T* s, int64_t len, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < len; ++j) m = m > s[j] ? m : s[j];
  T z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t j = 0; j < len; ++j) {
    s[j] = exp_of(s[j] - m);
    z += s[j];
  }
  const T r = T(1) / z;
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) s[j] *= r;
  std::fill(s + len, s + n, T(0));
}

// Row ds (n) holds dp on entry: ds = p (dp - sum(p dp)) over [0, len),
// zero over [len, n).
template <typename T>
void softmax_grad_row(const T* p, T* ds, int64_t len, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < len; ++j) sum += p[j] * ds[j];
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) ds[j] = p[j] * (ds[j] - sum);
  std::fill(ds + len, ds + n, T(0));
}

struct Dims {
  int64_t B, T, H, D, C, row;  // row = 3C, the stride between qkv rows
  double scale;
};

Dims dims_of(int64_t B, int64_t Tn, int64_t H, int64_t D) {
  return {B, Tn, H, D, H * D, 3 * H * D, 1.0 / std::sqrt(double(D))};
}

bool parallel(const Dims& d) {
  return d.B * d.H > 1 && d.B * d.H * d.T * d.T * d.D >= kParallelMinWork;
}

// One pair: p (T, T) probabilities, o (T, C-strided) output of head h.
template <typename T>
void forward_pair(const Dims& d, const T* q, T* p, T* o) {
  const T* k = q + d.C;
  const T* v = q + 2 * d.C;
  for (int64_t r0 = 0; r0 < d.T; r0 += kAttentionTile) {
    const int64_t r1 = std::min(r0 + kAttentionTile, d.T), rows = r1 - r0;
    // S[r0:r1, 0:r1] = scale Q[r0:r1] K[0:r1]^T.
    mm(false, true, rows, r1, d.D, d.scale, q + r0 * d.row, d.row, k, d.row,
       p + r0 * d.T, d.T);
    for (int64_t t = r0; t < r1; ++t)
      causal_softmax_row(p + t * d.T, t + 1, r1);
    // O[r0:r1] = P[r0:r1, 0:r1] V[0:r1].
    mm(false, false, rows, d.D, r1, 1.0, p + r0 * d.T, d.T, v, d.row,
       o + r0 * d.C, d.C);
  }
}

// One pair: ds (T, T) scratch; dq, dk, dv (T, 3C-strided) of head h.
template <typename T>
void backward_pair(const Dims& d, const T* q, const T* p, const T* go, T* ds,
                   T* dq) {
  const T* k = q + d.C;
  const T* v = q + 2 * d.C;
  T* dk = dq + d.C;
  T* dv = dq + 2 * d.C;
  for (int64_t r0 = 0; r0 < d.T; r0 += kAttentionTile) {
    const int64_t r1 = std::min(r0 + kAttentionTile, d.T), rows = r1 - r0;
    // dP[r0:r1, 0:r1] = dO[r0:r1] V[0:r1]^T, then dS in place.
    mm(false, true, rows, r1, d.D, 1.0, go + r0 * d.C, d.C, v, d.row,
       ds + r0 * d.T, d.T);
    for (int64_t t = r0; t < r1; ++t) {
      softmax_grad_row(p + t * d.T, ds + t * d.T, t + 1, r1);
    }
    // dQ[r0:r1] = scale dS[r0:r1, 0:r1] K[0:r1].
    mm(false, false, rows, d.D, r1, d.scale, ds + r0 * d.T, d.T, k, d.row,
       dq + r0 * d.row, d.row);
  }
  for (int64_t c0 = 0; c0 < d.T; c0 += kAttentionTile) {
    const int64_t c1 = std::min(c0 + kAttentionTile, d.T), cols = c1 - c0;
    const int64_t n = d.T - c0;  // rows t >= c0 see keys [c0, c1)
    // dV[c0:c1] = P[c0:T, c0:c1]^T dO[c0:T].
    mm(true, false, cols, d.D, n, 1.0, p + c0 * d.T + c0, d.T, go + c0 * d.C,
       d.C, dv + c0 * d.row, d.row);
    // dK[c0:c1] = scale dS[c0:T, c0:c1]^T Q[c0:T].
    mm(true, false, cols, d.D, n, d.scale, ds + c0 * d.T + c0, d.T,
       q + c0 * d.row, d.row, dk + c0 * d.row, d.row);
  }
}

}  // namespace

template <typename T>
void causal_attention(const T* qkv, T* out, T* probs, int64_t B, int64_t Tn,
                      int64_t H, int64_t D) {
  const Dims d = dims_of(B, Tn, H, D);
#pragma omp parallel for schedule(static) if (parallel(d))
  for (int64_t i = 0; i < B * H; ++i) {
    const int64_t b = i / H, h = i % H;
    forward_pair(d, qkv + b * Tn * d.row + h * D, probs + i * Tn * Tn,
                 out + b * Tn * d.C + h * D);
  }
}

template <typename T>
void causal_attention_backward(const T* qkv, const T* probs, const T* dout,
                               T* dqkv, int64_t B, int64_t Tn, int64_t H,
                               int64_t D) {
  const Dims d = dims_of(B, Tn, H, D);
#pragma omp parallel if (parallel(d))
  {
    std::vector<T> ds(size_t(Tn * Tn));  // (T, T) per thread
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * H; ++i) {
      const int64_t b = i / H, h = i % H;
      const int64_t at = b * Tn * d.row + h * D;
      backward_pair(d, qkv + at, probs + i * Tn * Tn,
                    dout + b * Tn * d.C + h * D, ds.data(), dqkv + at);
    }
  }
}

template void causal_attention(const float*, float*, float*, int64_t, int64_t,
                               int64_t, int64_t);
template void causal_attention(const double*, double*, double*, int64_t,
                               int64_t, int64_t, int64_t);
template void causal_attention_backward(const float*, const float*,
                                        const float*, float*, int64_t, int64_t,
                                        int64_t, int64_t);
template void causal_attention_backward(const double*, const double*,
                                        const double*, double*, int64_t,
                                        int64_t, int64_t, int64_t);

}  // namespace kbit::cpu
