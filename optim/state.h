// Optimizer state buffers: the per-parameter memory an update rule keeps.
//
// A StateBuffer is one state (Adam's m, v; SGD's momentum) of one parameter,
// of one of three kinds, all allocated under the optim_state tag:
//   f32  the state itself, the parameter's shape
//   q8   codes: u8 (n); absmax: f32 (nb); a shared StateCodebook of 256
//   q4   codes: u8 ((n + 1) / 2), two per byte, the even element in the
//        high nibble (as quant/ packs); absmax: f32 (nb); a StateCodebook of
//        16
// n = numel, B = block_size, nb = ceil(n / B); block_size 0 means one absmax
// for the whole tensor (nb = 1, the tensor-wise ablation). The decoded state
// of element i is codebook[code_i] * absmax[i / B]. A fresh quantized buffer
// has absmax 0, so it decodes to 0 whatever its codes.
// ParamState groups a parameter's buffers with its step count and its
// percentile-clipping ring.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/optim_blockwise.h"

namespace kbit {

// A codebook prepared for the fused kernels, built once per name and shared
// by every buffer that uses it. Names: the quant/ codebooks (dynamic,
// udynamic, linear, ulinear, dynamic4, linear4, ulinear_nz, ...) and
// quantile / uquantile (8-bit) or quantile4 / uquantile4: codes at the
// quantiles of N(0,1) and of chi-square(1) (a fixed fit; a state's own
// distribution moves while it trains). Codebooks with fewer than 2^bits
// values (linear: 255) are padded by repeating the largest value (every
// copy decodes to the same value).
struct StateCodebook {
  std::string name;
  int bits = 8;               // 8 or 4
  std::vector<float> values;  // (2^bits) ascending
  cpu::BlockCodebook block;
};
// Throws UserError for an unknown name.
const StateCodebook& state_codebook(const std::string& name);

class StateBuffer {
 public:
  enum class Kind : uint8_t { f32 = 0, q8 = 1, q4 = 2 };

  // A zero f32 state of `shape`.
  static StateBuffer zeros_f32(const Shape& shape);
  // A zero quantized state of `shape`: cb.bits bits, block_size 32..4096
  // (power of two) or 0 (one block).
  static StateBuffer zeros_quant(const Shape& shape, int64_t block_size,
                                 const StateCodebook& cb);

  Kind kind() const { return kind_; }
  bool quantized() const { return kind_ != Kind::f32; }
  int bits() const;  // 32, 8 or 4
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_numel(shape_); }
  int64_t block_size() const { return block_size_; }  // 0: whole tensor
  int64_t effective_block_size() const;               // numel for 0
  const StateCodebook* codebook() const { return codebook_; }

  float* f32_data() const;                          // kind f32 only
  const Tensor& values() const { return values_; }  // f32 (shape)
  const Tensor& codes() const { return codes_; }    // u8 (code bytes)
  const Tensor& absmax() const { return absmax_; }  // f32 (nb)
  // The kernels' view of a quantized buffer.
  cpu::QuantState quant_state() const;

  // The decoded state as a new f32 tensor of shape() (any kind).
  Tensor dequantize(MemTag tag = MemTag::workspace) const;
  // The same into x (numel floats).
  void dequantize_to(float* x) const;
  // Sets the state to x (numel floats): f32 copies, quantized kinds take
  // each block's absmax = max |x| and the nearest code with the sign fix,
  // exactly as the fused kernels requantize.
  void assign(const float* x);

  // Bytes of every allocation this buffer holds.
  int64_t bytes() const;

 private:
  Kind kind_ = Kind::f32;
  Shape shape_;
  int64_t block_size_ = 0;
  const StateCodebook* codebook_ = nullptr;
  Tensor values_;  // f32 only
  Tensor codes_;   // quantized only
  Tensor absmax_;  // quantized only
};

// Slots of the percentile-clipping ring (bitsandbytes' choice).
inline constexpr int kPercentileRing = 100;

struct ParamState {
  int64_t step = 0;  // updates applied to this parameter (bias correction)
  std::vector<StateBuffer> buffers;
  std::vector<float> gnorm_ring;  // (kPercentileRing) squared grad norms
};

// The states of one optimizer's parameters, created on first use.
class StateStore {
 public:
  // Parameter i's state; on first use makes `n_buffers` zero f32 buffers of
  // `param`'s shape.
  ParamState& get(size_t i, const Tensor& param, int n_buffers);
  // Parameter i's state, or null before it was created.
  ParamState* find(size_t i);
  const ParamState* find(size_t i) const;
  // Creates parameter i's (empty) state; it must not exist yet.
  ParamState& create(size_t i);
  size_t size() const { return states_.size(); }
  void clear();
  int64_t bytes() const;

 private:
  std::vector<ParamState> states_;
  std::vector<bool> created_;
};

}  // namespace kbit
