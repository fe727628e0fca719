// Blockwise quantization of tensors: split into blocks of block_size values
// (the last may be partial), store each block's absmax in f32 and each
// value as the code of the nearest codebook value of x / absmax.
//
// Inputs are f32, bf16 or f16 (any layout; read in row-major order);
// dequantize returns f32. The fast path (kernels/cpu/quantize.h) and the
// reference loop (kernels/ref/quantize.h) give identical codes.
#pragma once

#include <cstdint>

#include "core/philox.h"
#include "core/tensor.h"
#include "quant/codebook.h"
#include "quant/quantized_tensor.h"

namespace kbit::quant {

constexpr int64_t kMinBlockSize = 32;
constexpr int64_t kMaxBlockSize = 4096;
constexpr int64_t kWholeTensor = 0;  // block_size for one block

// UserError unless block_size is kWholeTensor or a power of two in
// [kMinBlockSize, kMaxBlockSize]; the message lists the valid choices.
void check_block_size(int64_t block_size);

// Nearest-code quantization, or stochastic rounding when rng is given:
// element i draws word rng->offset() + i of rng's stream, and the offset
// advances by numel. Codes and absmax are allocated under `tag`.
QuantizedTensor quantize(const Tensor& x, const Codebook& codebook,
                         int64_t block_size, Philox* rng = nullptr,
                         MemTag tag = MemTag::workspace);
Tensor dequantize(const QuantizedTensor& q, MemTag tag = MemTag::activation);

// The same through the reference loops (slow; the tests' oracle).
QuantizedTensor quantize_ref(const Tensor& x, const Codebook& codebook,
                             int64_t block_size, Philox* rng = nullptr);
Tensor dequantize_ref(const QuantizedTensor& q);

}  // namespace kbit::quant
