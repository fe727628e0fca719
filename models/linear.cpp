#include "models/linear.h"

#include <cmath>

#include "autograd/ops.h"

namespace kbit {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias,
               Philox& rng, DType dtype)
    : in_features_(in_features), out_features_(out_features) {
  KBIT_CHECK(in_features >= 1 && out_features >= 1,
             "[linear] expected in and out features >= 1, got ", in_features,
             " and ", out_features);
  double bound = 1.0 / std::sqrt(double(in_features));
  weight_ = register_parameter(
      "weight", Tensor::rand({out_features, in_features}, rng, dtype, -bound,
                             bound, MemTag::param));
  if (bias) {
    bias_ = register_parameter(
        "bias",
        Tensor::rand({out_features}, rng, dtype, -bound, bound, MemTag::param));
  }
}

Tensor Linear::forward(const Tensor& x) const {
  KBIT_CHECK(x.dim() >= 1 && x.shape(-1) == in_features_,
             "[linear] expected input (..., ", in_features_, "), got ",
             shape_str(x.shape()));
  return linear(x, weight_, bias_);
}

}  // namespace kbit
