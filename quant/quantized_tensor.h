// QuantizedTensor: a blockwise-quantized tensor (codes, absmax, block size,
// codebook and shape) and its exact binary save format.
//
// File layout (little endian), version 1:
//   "KBITQNT\0"  magic (8 bytes)      u32 version
//   u32 name length, name bytes       u32 bits, u32 number of codes n,
//   f32 codes (n)                     u32 ndim, i64 dims (ndim)
//   i64 block_size (0 = whole tensor) u64 code bytes, u8 codes
//   u64 number of blocks, f32 absmax  u64 FNV-1a 64 of all bytes before it
// load() checks every field and the checksum and throws UserError naming
// the file and what was wrong.
#pragma once

#include <iosfwd>
#include <string>

#include "core/tensor.h"
#include "quant/codebook.h"

namespace kbit::quant {

class QuantizedTensor {
 public:
  QuantizedTensor() = default;
  // codes: u8 (code_bytes), absmax: f32 (num_blocks); checked.
  QuantizedTensor(Shape shape, int64_t block_size, Codebook codebook,
                  Tensor codes, Tensor absmax);

  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_numel(shape_); }
  // As given: 0 = one block over the whole tensor.
  int64_t block_size() const { return block_size_; }
  // The block length the kernels use (numel for a whole-tensor block).
  int64_t effective_block_size() const;
  int64_t num_blocks() const { return absmax_.numel(); }
  const Codebook& codebook() const { return codebook_; }
  const Tensor& codes() const { return codes_; }    // u8 (code bytes)
  const Tensor& absmax() const { return absmax_; }  // f32 (num_blocks)
  // Bytes held: codes plus absmax.
  size_t nbytes() const { return codes_.nbytes() + absmax_.nbytes(); }
  bool defined() const { return codebook_.defined(); }

  void save(const std::string& path) const;
  static QuantizedTensor load(const std::string& path);
  // The same on streams; `what` names the source in messages.
  void save(std::ostream& out) const;
  static QuantizedTensor load(std::istream& in, const std::string& what);

 private:
  Shape shape_;
  int64_t block_size_ = 0;
  Codebook codebook_;
  Tensor codes_;
  Tensor absmax_;
};

// Same shape, block size, codebook values and identical bytes.
bool identical(const QuantizedTensor& a, const QuantizedTensor& b);

}  // namespace kbit::quant
