// Codebooks: the k-bit data types of "quantization by definition".
//
// A codebook is a strictly increasing list of at most 256 float codes in
// [-1, 1] (signed) or [0, 1] (unsigned). A value is quantized by dividing it
// by its block's absmax and storing the index of the nearest code. This file
// builds the named codebooks; the search tables the kernels use are derived
// here too (kernels/cpu/quantize.h describes them).
//
// Names (as in configs and `kbit map NAME`); a trailing number is the bits:
//   int2..int8        symmetric integers -(2^(k-1)-1)..2^(k-1)-1 over max
//   e{E}m{M}          sign + E exponent + M mantissa bits, IEEE-like bias
//                     2^(E-1)-1, subnormals, no inf/NaN codes, over max;
//                     fp8_e4m3 = e4m3, fp8_e5m2 = e5m2 (bitsandbytes'
//                     create_fp8_map puts its subnormals 4x lower, e.g.
//                     1.0e-6 instead of 4.1e-6 for e4m3; these are IEEE's)
//   fp4               the e2m1 table bitsandbytes' kernels use:
//                     +-{0, 0.0625, 2, 3, 4, 6, 8, 12} / 12
//   dynamic, udynamic dynamic tree maps, signed and unsigned (8 bits; the
//                     256 values of bitsandbytes); dynamic2..8, udynamic2..8
//   linear, ulinear   evenly spaced: signed 2^k-1 points on [-1, 1] (with
//                     0), unsigned 2^k points on [0, 1]; linear2.., ulinear2..
//   ulinear_nz        zero-free unsigned linear (i+1)/2^k for second moments
//                     (4 bits unless ulinear_nz2..8)
//   nf4               normal float 4 (16 codes, exact zero)
//   quantile          fitted to a sample (make_quantile); 8 bits or
//                     quantile2..8
//
// Codes are strictly increasing: duplicates are dropped (so int4 has 15
// codes and fp8_e5m2 255).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/quantize.h"

namespace kbit::quant {

constexpr int kMaxCodes = 256;

class Codebook {
 public:
  Codebook() = default;
  // From values (any order, duplicates allowed, all in [-1, 1]); sorts,
  // drops duplicates and builds the search tables. `raw_scale` > 0 means
  // code * raw_scale is the type's own value (7 for int4, 12 for fp4).
  Codebook(std::string name, int bits, std::vector<float> values,
           double raw_scale = 0.0, std::string raw_label = "");

  const std::string& name() const;
  int bits() const;  // bits per stored code
  bool is_signed() const { return codes().front() < 0.f; }
  int size() const { return int(codes().size()); }
  const std::vector<float>& codes() const;  // (size) increasing
  float code(int index) const { return codes()[size_t(index)]; }
  // Codebooks of <= 16 codes store two codes per byte (first in the high
  // nibble).
  bool packed() const { return size() <= 16; }
  // The unnormalized value of code i is code(i) * raw_scale(); 0 = none.
  double raw_scale() const;
  const std::string& raw_label() const;
  // Search tables for kernels/cpu (valid while this codebook lives).
  const cpu::CodeSearch& search() const;
  bool defined() const { return impl_ != nullptr; }

  // Exact nearest code of a normalized value (ties go to the upper code).
  int nearest(float v) const { return cpu::nearest_code(search(), v); }

 private:
  struct Impl;
  const Impl& impl() const;
  std::shared_ptr<const Impl> impl_;
};

// The codebook named `name` (see the list above). Throws UserError naming
// the valid choices for an unknown name. "quantile" names are rejected here:
// they need a sample (make_quantile).
Codebook make_codebook(const std::string& name);
// True for names make_codebook accepts.
bool is_codebook_name(const std::string& name);
// A human-readable list of the valid names, for error messages.
std::string codebook_choices();

Codebook make_int(int bits);
Codebook make_float(int exponent_bits, int mantissa_bits);
Codebook make_fp4();
Codebook make_dynamic(bool is_signed, int bits);
Codebook make_linear(bool is_signed, int bits);
Codebook make_linear_nonzero(int bits);
Codebook make_nf4();
// 2^bits - 1 quantiles of |sample|-normalized data plus an exact 0: the
// sample is divided by its absmax, the quantiles are taken at evenly spaced
// probabilities from offset to 1 - offset (offset = 1 / 2^(bits+1)), and the
// codes are divided by the largest |quantile|. Needs n >= 2^bits.
Codebook make_quantile(const float* sample, int64_t n, int bits);

// Inverse of the standard normal CDF, to double precision (p in (0, 1)).
double normal_quantile(double p);

}  // namespace kbit::quant
