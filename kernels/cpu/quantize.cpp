// Whole-tensor blockwise quantization: OpenMP over blocks (one block's
// absmax and codes in one pass while the block is in cache), or over chunks
// of one huge block (two passes: absmax, then codes).
#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace kbit::cpu {
namespace {

constexpr int64_t kParallelMin = int64_t(1) << 15;  // fork cost threshold
constexpr int64_t kChunk = 16384;  // values per task within a huge block

// Codes of x[begin, begin + len) (begin even when packed).
template <typename T>
void quantize_range(const CodeSearch& s, const T* x, int64_t begin, int64_t len,
                    float inv, uint8_t* codes, const Stochastic* st) {
  const T* xb = x + begin;
  uint8_t* out = codes + (s.packed ? begin / 2 : begin);
  if (st) {
    quantize_block_stochastic(s, xb, len, inv, st->seed,
                              st->offset + uint64_t(begin), out);
  } else if (s.packed) {
    quantize_block_packed(s, xb, len, inv, out);
  } else {
    quantize_block(s, xb, len, inv, out);
  }
}

template <typename T>
void quantize_impl(const CodeSearch& s, const T* x, int64_t n,
                   int64_t block_size, float* absmax, uint8_t* codes,
                   const Stochastic* st) {
  KBIT_CHECK(block_size >= 1, "[quantize] expected block_size >= 1, got ",
             block_size);
  if (n <= 0) return;
  int64_t bs = std::min(block_size, n);
  int64_t nb = num_blocks(n, bs);
  KBIT_CHECK(!s.packed || nb == 1 || bs % 2 == 0,
             "[quantize] expected an even block_size for packed codes, got ",
             bs);
  bool par = n >= kParallelMin;

  if (bs <= kChunk) {
#pragma omp parallel for schedule(static) if (par)
    for (int64_t j = 0; j < nb; ++j) {
      int64_t begin = j * bs, len = std::min(bs, n - begin);
      absmax[j] = block_absmax(x + begin, len);
      quantize_range(s, x, begin, len, inverse_absmax(absmax[j]), codes, st);
    }
    return;
  }

  // Huge blocks: chunk maxima, then codes chunk by chunk.
  int64_t per_block = num_blocks(bs, kChunk);
  int64_t nchunks = nb * per_block;
  std::vector<float> chunk_max(size_t(nchunks), 0.f);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t c = 0; c < nchunks; ++c) {
    int64_t begin = (c / per_block) * bs + (c % per_block) * kChunk;
    int64_t block_end = std::min(n, (c / per_block + 1) * bs);
    if (begin < block_end)
      chunk_max[c] =
          block_absmax(x + begin, std::min(kChunk, block_end - begin));
  }
  for (int64_t j = 0; j < nb; ++j) {
    absmax[j] = *std::max_element(chunk_max.begin() + j * per_block,
                                  chunk_max.begin() + (j + 1) * per_block);
  }
#pragma omp parallel for schedule(static) if (par)
  for (int64_t c = 0; c < nchunks; ++c) {
    int64_t j = c / per_block;
    int64_t begin = j * bs + (c % per_block) * kChunk;
    int64_t block_end = std::min(n, (j + 1) * bs);
    if (begin < block_end)
      quantize_range(s, x, begin, std::min(kChunk, block_end - begin),
                     inverse_absmax(absmax[j]), codes, st);
  }
}

// Outputs of at least this many values are written with streaming stores.
constexpr int64_t kStreamMin = int64_t(1) << 22;

// Dequantizes x[begin, begin + len) of block j (begin even when packed).
template <bool Stream>
void dequantize_range(const CodeSearch& s, const uint8_t* codes, int64_t begin,
                      int64_t len, float absmax, float* out) {
  if (s.packed) {
    dequantize_block_packed<Stream>(s, codes + begin / 2, len, absmax,
                                    out + begin);
  } else {
    dequantize_block<Stream>(s, codes + begin, len, absmax, out + begin);
  }
}

template <bool Stream>
void dequantize_tasks(const CodeSearch& s, const uint8_t* codes,
                      const float* absmax, int64_t n, int64_t bs, float* out) {
  // Tasks of whole blocks, or of chunks of one huge block.
  int64_t step = std::min(bs, kChunk);
  int64_t per_block = num_blocks(bs, step);
  int64_t ntasks = num_blocks(n, bs) * per_block;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t t = 0; t < ntasks; ++t) {
    int64_t j = t / per_block;
    int64_t begin = j * bs + (t % per_block) * step;
    int64_t end = std::min(std::min(n, (j + 1) * bs), begin + step);
    if (begin < end)
      dequantize_range<Stream>(s, codes, begin, end - begin, absmax[j], out);
  }
}

}  // namespace

void quantize_blockwise(const CodeSearch& s, const float* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic) {
  quantize_impl(s, x, n, block_size, absmax, codes, stochastic);
}

void quantize_blockwise(const CodeSearch& s, const bf16_t* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic) {
  quantize_impl(s, x, n, block_size, absmax, codes, stochastic);
}

void quantize_blockwise(const CodeSearch& s, const f16_t* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic) {
  quantize_impl(s, x, n, block_size, absmax, codes, stochastic);
}

void dequantize_blockwise(const CodeSearch& s, const uint8_t* codes,
                          const float* absmax, int64_t n, int64_t block_size,
                          float* out) {
  KBIT_CHECK(block_size >= 1, "[dequantize] expected block_size >= 1, got ",
             block_size);
  if (n <= 0) return;
  int64_t bs = std::min(block_size, n);
#if defined(__AVX2__)
  // Streaming stores need every task's start 32-byte aligned.
  bool aligned = reinterpret_cast<uintptr_t>(out) % 32 == 0 &&
                 std::min(bs, kChunk) % 8 == 0;
  if (n >= kStreamMin && aligned) {
    dequantize_tasks<true>(s, codes, absmax, n, bs, out);
    _mm_sfence();
    return;
  }
#endif
  dequantize_tasks<false>(s, codes, absmax, n, bs, out);
}

}  // namespace kbit::cpu
