// Causal attention kernels. One (b, h) pair is one task. Its k and v (and
// in the backward pass q and dout) are first packed into small per-thread
// buffers: rows zero-padded to whole SIMD vectors, or transposed so that
// key positions run along a vector. Two register-blocked loops then do
// every product, kRows rows at a time:
//   rows_by_cols  S (rows, j) = alpha X (rows, D) Y^T, Y^T packed (D, Tp),
//                 over the key columns the row group can see;
//   rows_by_mat   O (rows, D) = alpha A (rows, [k0, k1)) X, X packed.
// For the small per-head products (T x T x D with D ~ 32) these beat calls
// into the GEMM library, which spends more on packing and dispatch than on
// the math at these sizes (bench_gpt --ops 1, see bench/bench_gpt.cpp).
// Vectors are GCC vector extensions of 64 bytes (one AVX-512 register;
// two AVX2 registers elsewhere).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/fast_exp.h"

namespace kbit::cpu {
namespace {

constexpr int64_t kRows = 4;  // rows of one register block

// Below this many multiply-adds in all pairs together, one thread runs
// them (the fork would cost more).
constexpr int64_t kParallelMinWork = int64_t(1) << 16;

template <typename T>
struct Simd {
  typedef T V __attribute__((vector_size(64)));
  static constexpr int64_t L = 64 / int64_t(sizeof(T));  // lanes
};
template <typename T>
using Vec = typename Simd<T>::V;

template <typename T>
Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

// Row pointers of a block of nr <= kRows rows; missing rows repeat the
// last one (computed, never stored).
template <typename T>
void row_pointers(const T* x, int64_t ld, int64_t nr, const T* (&rows)[kRows]) {
  for (int64_t r = 0; r < kRows; ++r) rows[r] = x + std::min(r, nr - 1) * ld;
}

// NC vectors of columns from j0: s[r][j] = alpha sum_d x[r][d] yt[d][j].
template <typename T, int NC>
void score_block(const T* const (&x)[kRows], const T* yt, int64_t ldy,
                 int64_t D, int64_t j0, T alpha, T* s, int64_t lds,
                 int64_t nr) {
  constexpr int64_t L = Simd<T>::L;
  Vec<T> acc[kRows][NC] = {};
  for (int64_t d = 0; d < D; ++d) {
    Vec<T> y[NC];
    for (int c = 0; c < NC; ++c) y[c] = load(yt + d * ldy + j0 + c * L);
    for (int64_t r = 0; r < kRows; ++r) {
      const T xv = x[r][d];
      for (int c = 0; c < NC; ++c) acc[r][c] += xv * y[c];
    }
  }
  for (int64_t r = 0; r < nr; ++r) {
    for (int c = 0; c < NC; ++c) {
      store(s + r * lds + j0 + c * L, acc[r][c] * alpha);
    }
  }
}

// s (nr, ncols), row stride lds, = alpha x (nr, D) yt (D, ncols): x rows
// at stride ldx, yt rows at stride ldy, ncols a multiple of the lanes.
template <typename T>
void rows_by_cols(const T* x, int64_t ldx, int64_t nr, const T* yt, int64_t ldy,
                  int64_t D, int64_t ncols, T alpha, T* s, int64_t lds) {
  constexpr int64_t L = Simd<T>::L;
  const T* xr[kRows];
  row_pointers(x, ldx, nr, xr);
  int64_t j0 = 0;
  for (; j0 + 2 * L <= ncols; j0 += 2 * L) {
    score_block<T, 2>(xr, yt, ldy, D, j0, alpha, s, lds, nr);
  }
  if (j0 < ncols) score_block<T, 1>(xr, yt, ldy, D, j0, alpha, s, lds, nr);
}

// NC vectors of channels from c0: out[r][c] = alpha sum_k a[r][k] x[k][c]
// over k in [k0, k1); only channels below D are stored.
template <typename T, int NC>
void mat_block(const T* const (&a)[kRows], int64_t k0, int64_t k1, const T* x,
               int64_t ldx, int64_t c0, int64_t D, T alpha, T* out, int64_t ldo,
               int64_t nr) {
  constexpr int64_t L = Simd<T>::L;
  Vec<T> acc[kRows][NC] = {};
  for (int64_t k = k0; k < k1; ++k) {
    Vec<T> xv[NC];
    for (int c = 0; c < NC; ++c) xv[c] = load(x + k * ldx + c0 + c * L);
    for (int64_t r = 0; r < kRows; ++r) {
      const T av = a[r][k];
      for (int c = 0; c < NC; ++c) acc[r][c] += av * xv[c];
    }
  }
  for (int64_t r = 0; r < nr; ++r) {
    for (int c = 0; c < NC; ++c) {
      const int64_t at = c0 + c * L, w = std::min(L, D - at);
      if (w <= 0) break;
      T tmp[L];
      store(tmp, acc[r][c] * alpha);
      std::copy(tmp, tmp + w, out + r * ldo + at);
    }
  }
}

// out (nr, D), row stride ldo, = alpha a (nr, [k0, k1)) x ([k0, k1), Dp):
// a rows at stride lda, x rows at stride ldx = Dp (zero-padded channels).
template <typename T>
void rows_by_mat(const T* a, int64_t lda, int64_t nr, int64_t k0, int64_t k1,
                 const T* x, int64_t ldx, int64_t D, T alpha, T* out,
                 int64_t ldo) {
  constexpr int64_t L = Simd<T>::L;
  const T* ar[kRows];
  row_pointers(a, lda, nr, ar);
  int64_t c0 = 0;
  for (; c0 + 2 * L <= ldx; c0 += 2 * L) {
    mat_block<T, 2>(ar, k0, k1, x, ldx, c0, D, alpha, out, ldo, nr);
  }
  if (c0 < ldx) mat_block<T, 1>(ar, k0, k1, x, ldx, c0, D, alpha, out, ldo, nr);
}

// dst (n, ldd) = src (n, D) with rows at stride lds; columns [D, ldd) zero.
template <typename T>
void pack_rows(const T* src, int64_t lds, int64_t n, int64_t D, T* dst,
               int64_t ldd) {
  for (int64_t i = 0; i < n; ++i) {
    std::copy(src + i * lds, src + i * lds + D, dst + i * ldd);
    std::fill(dst + i * ldd + D, dst + (i + 1) * ldd, T(0));
  }
}

// dst (D, ldd): dst[d][j] = src[j][d] for j < n, zero for j in [n, ldd).
template <typename T>
void pack_cols(const T* src, int64_t lds, int64_t n, int64_t D, T* dst,
               int64_t ldd) {
  for (int64_t d = 0; d < D; ++d) {
    T* row = dst + d * ldd;
    for (int64_t j = 0; j < n; ++j) row[j] = src[j * lds + d];
    std::fill(row + n, row + ldd, T(0));
  }
}

// dst[j][t] = src[t][j] for t >= j, else 0 (t, j < n): the transpose of a
// lower-triangular (n, n) matrix.
template <typename T>
void transpose_causal(const T* src, int64_t lds, int64_t n, T* dst,
                      int64_t ldd) {
  for (int64_t j = 0; j < n; ++j) {
    T* row = dst + j * ldd;
    std::fill(row, row + j, T(0));
    for (int64_t t = j; t < n; ++t) row[t] = src[t * lds + j];
  }
}

// Row s of scores -> softmax over [0, len), zero over [len, n).
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

// Row ds holds dp on entry: ds = p (dp - sum(p dp)) over [0, len), zero
// over [len, n).
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
  int64_t Tp, Dp;              // T and D rounded up to whole vectors
  double scale;
};

template <typename T>
Dims dims_of(int64_t B, int64_t Tn, int64_t H, int64_t D) {
  return {B,
          Tn,
          H,
          D,
          H * D,
          3 * H * D,
          attention_row<T>(Tn),
          round_up(D, Simd<T>::L),
          1.0 / std::sqrt(double(D))};
}

bool parallel(const Dims& d) {
  return d.B * d.H > 1 && d.B * d.H * d.T * d.T * d.D >= kParallelMinWork;
}

// Per-thread buffers of one pair.
template <typename T>
struct Scratch {
  std::vector<T> kt, vt;       // (D, Tp): k, v transposed
  std::vector<T> kp, vp;       // (T, Dp): k, v padded
  std::vector<T> qp, gp;       // (T, Dp): q, dout padded
  std::vector<T> ds, pt, dst;  // (T, Tp): dS, P^T, dS^T
};

// One pair: p (T, Tp) probabilities; o (T, C-strided) output of head h.
template <typename T>
void forward_pair(const Dims& d, const T* q, T* p, T* o, Scratch<T>& w) {
  const T* k = q + d.C;
  const T* v = q + 2 * d.C;
  pack_cols(k, d.row, d.T, d.D, w.kt.data(), d.Tp);
  pack_rows(v, d.row, d.T, d.D, w.vp.data(), d.Dp);
  for (int64_t t0 = 0; t0 < d.T; t0 += kRows) {
    const int64_t nr = std::min(kRows, d.T - t0), n = t0 + nr;
    const int64_t ncols = round_up(n, Simd<T>::L);
    T* pr = p + t0 * d.Tp;
    // S rows = scale Q rows K[0:n]^T, then the causal softmax in place.
    rows_by_cols(q + t0 * d.row, d.row, nr, w.kt.data(), d.Tp, d.D, ncols,
                 T(d.scale), pr, d.Tp);
    for (int64_t r = 0; r < nr; ++r) {
      causal_softmax_row(pr + r * d.Tp, t0 + r + 1, ncols);
    }
    // O rows = P rows V[0:n].
    rows_by_mat(pr, d.Tp, nr, 0, n, w.vp.data(), d.Dp, d.D, T(1), o + t0 * d.C,
                d.C);
  }
}

// One pair: dq, dk, dv (T, 3C-strided) of head h from dout go.
template <typename T>
void backward_pair(const Dims& d, const T* q, const T* p, const T* go, T* dq,
                   Scratch<T>& w) {
  const T* k = q + d.C;
  const T* v = q + 2 * d.C;
  T* dk = dq + d.C;
  T* dv = dq + 2 * d.C;
  pack_cols(v, d.row, d.T, d.D, w.vt.data(), d.Tp);
  pack_rows(k, d.row, d.T, d.D, w.kp.data(), d.Dp);
  pack_rows(q, d.row, d.T, d.D, w.qp.data(), d.Dp);
  pack_rows(go, d.C, d.T, d.D, w.gp.data(), d.Dp);
  T* ds = w.ds.data();
  for (int64_t t0 = 0; t0 < d.T; t0 += kRows) {
    const int64_t nr = std::min(kRows, d.T - t0), n = t0 + nr;
    const int64_t ncols = round_up(n, Simd<T>::L);
    T* dr = ds + t0 * d.Tp;
    // dP rows = dO rows V[0:n]^T, then dS in place.
    rows_by_cols(go + t0 * d.C, d.C, nr, w.vt.data(), d.Tp, d.D, ncols, T(1),
                 dr, d.Tp);
    for (int64_t r = 0; r < nr; ++r) {
      softmax_grad_row(p + (t0 + r) * d.Tp, dr + r * d.Tp, t0 + r + 1, ncols);
    }
    // dQ rows = scale dS rows K[0:n].
    rows_by_mat(dr, d.Tp, nr, 0, n, w.kp.data(), d.Dp, d.D, T(d.scale),
                dq + t0 * d.row, d.row);
  }
  transpose_causal(p, d.Tp, d.T, w.pt.data(), d.Tp);
  transpose_causal(ds, d.Tp, d.T, w.dst.data(), d.Tp);
  for (int64_t j0 = 0; j0 < d.T; j0 += kRows) {
    const int64_t nr = std::min(kRows, d.T - j0);
    // dV rows = P^T rows dO[j0:T]; dK rows = scale dS^T rows Q[j0:T].
    rows_by_mat(w.pt.data() + j0 * d.Tp, d.Tp, nr, j0, d.T, w.gp.data(), d.Dp,
                d.D, T(1), dv + j0 * d.row, d.row);
    rows_by_mat(w.dst.data() + j0 * d.Tp, d.Tp, nr, j0, d.T, w.qp.data(), d.Dp,
                d.D, T(d.scale), dk + j0 * d.row, d.row);
  }
}

}  // namespace

template <typename T>
void causal_attention(const T* qkv, T* out, T* probs, int64_t B, int64_t Tn,
                      int64_t H, int64_t D) {
  const Dims d = dims_of<T>(B, Tn, H, D);
#pragma omp parallel if (parallel(d))
  {
    Scratch<T> w;
    w.kt.resize(size_t(d.D * d.Tp));
    w.vp.resize(size_t(d.T * d.Dp));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * H; ++i) {
      const int64_t b = i / H, h = i % H;
      forward_pair(d, qkv + b * Tn * d.row + h * D, probs + i * Tn * d.Tp,
                   out + b * Tn * d.C + h * D, w);
    }
  }
}

template <typename T>
void causal_attention_backward(const T* qkv, const T* probs, const T* dout,
                               T* dqkv, int64_t B, int64_t Tn, int64_t H,
                               int64_t D) {
  const Dims d = dims_of<T>(B, Tn, H, D);
#pragma omp parallel if (parallel(d))
  {
    Scratch<T> w;
    w.vt.resize(size_t(d.D * d.Tp));
    for (auto* b : {&w.kp, &w.qp, &w.gp}) b->resize(size_t(d.T * d.Dp));
    for (auto* b : {&w.ds, &w.pt, &w.dst}) b->resize(size_t(d.T * d.Tp));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * H; ++i) {
      const int64_t b = i / H, h = i % H;
      const int64_t at = b * Tn * d.row + h * D;
      backward_pair(d, qkv + at, probs + i * Tn * d.Tp,
                    dout + b * Tn * d.C + h * D, dqkv + at, w);
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
