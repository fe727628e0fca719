#include "quant/blockwise.h"

#include "core/error.h"
#include "kernels/cpu/quantize.h"
#include "kernels/dispatch.h"
#include "kernels/ref/quantize.h"

namespace kbit::quant {
namespace {

int64_t kernel_block(int64_t block_size, int64_t n) {
  return block_size == kWholeTensor ? std::max<int64_t>(n, 1) : block_size;
}

// Calls f(const T*) with the data of a contiguous f32, bf16 or f16 tensor.
template <typename F>
void with_input(const Tensor& x, F&& f) {
  switch (x.dtype()) {
    case DType::f32:
      return f(x.data<float>());
    case DType::bf16:
      return f(static_cast<const bf16_t*>(x.raw_data()));
    case DType::f16:
      return f(static_cast<const f16_t*>(x.raw_data()));
    default:
      throw Error(str("[quantize] expected dtype f32, bf16 or f16, got ",
                      dtype_name(x.dtype())));
  }
}

template <typename Run>
QuantizedTensor quantize_with(const Tensor& input, const Codebook& codebook,
                              int64_t block_size, Philox* rng, MemTag tag,
                              Run&& run) {
  check_block_size(block_size);
  KBIT_CHECK(codebook.defined(), "[quantize] expected a codebook");
  require_backend(input.device(), "quantize");
  Tensor x = input.contiguous();
  int64_t n = x.numel();
  int64_t bs = kernel_block(block_size, n);
  bool packed = codebook.packed();
  Tensor codes = Tensor::zeros({cpu::code_bytes(n, packed)}, DType::u8, tag);
  Tensor absmax =
      Tensor::zeros({n == 0 ? 0 : cpu::num_blocks(n, bs)}, DType::f32, tag);
  cpu::Stochastic st;
  if (rng) st = {rng->seed(), rng->offset()};
  with_input(x, [&](auto* data) {
    run(data, n, bs, absmax.data<float>(), codes.data<uint8_t>(),
        rng ? &st : nullptr);
  });
  if (rng) rng->set_offset(rng->offset() + uint64_t(n));
  return QuantizedTensor(x.shape(), block_size, codebook, codes, absmax);
}

}  // namespace

void check_block_size(int64_t block_size) {
  bool pow2 = block_size > 0 && (block_size & (block_size - 1)) == 0;
  KBIT_USER_CHECK(
      block_size == kWholeTensor ||
          (pow2 && block_size >= kMinBlockSize && block_size <= kMaxBlockSize),
      "[quantize] expected block_size 32, 64, 128, 256, 512, "
      "1024, 2048, 4096 or 0 (whole tensor), got ",
      block_size);
}

QuantizedTensor quantize(const Tensor& x, const Codebook& codebook,
                         int64_t block_size, Philox* rng, MemTag tag) {
  const cpu::CodeSearch& s = codebook.search();
  return quantize_with(x, codebook, block_size, rng, tag,
                       [&](auto* data, int64_t n, int64_t bs, float* absmax,
                           uint8_t* codes, const cpu::Stochastic* st) {
                         cpu::quantize_blockwise(s, data, n, bs, absmax, codes,
                                                 st);
                       });
}

QuantizedTensor quantize_ref(const Tensor& x, const Codebook& codebook,
                             int64_t block_size, Philox* rng) {
  const std::vector<float>& values = codebook.codes();
  return quantize_with(x, codebook, block_size, rng, MemTag::workspace,
                       [&](auto* data, int64_t n, int64_t bs, float* absmax,
                           uint8_t* codes, const cpu::Stochastic* st) {
                         ref::quantize_blockwise(values.data(),
                                                 int(values.size()), data, n,
                                                 bs, absmax, codes, st);
                       });
}

Tensor dequantize(const QuantizedTensor& q, MemTag tag) {
  KBIT_CHECK(q.defined(), "[dequantize] expected a quantized tensor");
  Tensor out = Tensor::empty(q.shape(), DType::f32, tag);
  cpu::dequantize_blockwise(q.codebook().search(), q.codes().data<uint8_t>(),
                            q.absmax().data<float>(), q.numel(),
                            q.effective_block_size(), out.data<float>());
  return out;
}

Tensor dequantize_ref(const QuantizedTensor& q) {
  KBIT_CHECK(q.defined(), "[dequantize] expected a quantized tensor");
  Tensor out = Tensor::empty(q.shape(), DType::f32);
  const std::vector<float>& values = q.codebook().codes();
  ref::dequantize_blockwise(values.data(), int(values.size()),
                            q.codes().data<uint8_t>(), q.absmax().data<float>(),
                            q.numel(), q.effective_block_size(),
                            out.data<float>());
  return out;
}

}  // namespace kbit::quant
