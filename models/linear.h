// Linear: y = x W^T + b.
#pragma once

#include <cstdint>

#include "core/philox.h"
#include "models/module.h"

namespace kbit {

class Linear : public Module {
 public:
  // weight (out, in), bias (out); both U(-1/sqrt(in), 1/sqrt(in)). dtype
  // f32 by default; f64 for gradient checks.
  Linear(int64_t in_features, int64_t out_features, bool bias, Philox& rng,
         DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_, out_features_;
  Tensor weight_;  // (out, in)
  Tensor bias_;    // (out) or undefined
};

}  // namespace kbit
