#include "models/embedding.h"

#include <cmath>

#include "autograd/ops.h"

namespace kbit {
namespace {

void check_sizes(const char* op, int64_t vocab, int64_t dim) {
  KBIT_CHECK(vocab >= 1 && dim >= 1, op, " expected vocab and dim >= 1, got ",
             vocab, " and ", dim);
}

Tensor xavier_uniform(int64_t vocab, int64_t dim, Philox& rng, DType dtype) {
  check_sizes("[stable_embedding]", vocab, dim);
  const double a = std::sqrt(6.0 / double(vocab + dim));
  return Tensor::rand({vocab, dim}, rng, dtype, -a, a, MemTag::param);
}

}  // namespace

Embedding::Embedding(int64_t vocab, int64_t dim, Philox& rng, DType dtype)
    : Embedding(vocab, dim, [&] {
        check_sizes("[embedding]", vocab, dim);
        return Tensor::randn({vocab, dim}, rng, dtype, 0.0, 1.0, MemTag::param);
      }()) {}

Embedding::Embedding(int64_t vocab, int64_t dim, Tensor weight)
    : vocab_(vocab), dim_(dim) {
  weight_ = register_parameter("weight", std::move(weight));
}

Tensor Embedding::forward(const Tensor& indices) const {
  return embedding(weight_, indices);
}

LayerNorm::LayerNorm(int64_t dim, double eps, DType dtype)
    : dim_(dim), eps_(eps) {
  KBIT_CHECK(dim >= 1, "[layer_norm] expected dim >= 1, got ", dim);
  KBIT_CHECK(eps > 0, "[layer_norm] expected eps > 0, got ", eps);
  weight_ =
      register_parameter("weight", Tensor::ones({dim}, dtype, MemTag::param));
  bias_ =
      register_parameter("bias", Tensor::zeros({dim}, dtype, MemTag::param));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  KBIT_CHECK(x.dim() >= 1 && x.shape(-1) == dim_,
             "[layer_norm] expected input (..., ", dim_, "), got ",
             shape_str(x.shape()));
  return layer_norm(x, weight_, bias_, eps_);
}

StableEmbedding::StableEmbedding(int64_t vocab, int64_t dim, Philox& rng,
                                 DType dtype)
    : Embedding(vocab, dim, xavier_uniform(vocab, dim, rng, dtype)) {
  norm_ =
      register_module("norm", std::make_shared<LayerNorm>(dim, 1e-5, dtype));
  force_optim_bits("weight", 32);
}

Tensor StableEmbedding::forward(const Tensor& indices) const {
  return norm_->forward(Embedding::forward(indices));
}

}  // namespace kbit
