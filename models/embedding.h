// Embedding, LayerNorm and StableEmbedding modules.
//
// V vocabulary size, C embedding (channel) size. Indices are i32 or i64
// tensors of any shape with values in [0, V); outputs are indices.shape +
// (C).
#pragma once

#include <cstdint>
#include <memory>

#include "core/philox.h"
#include "models/module.h"

namespace kbit {

// A lookup table: weight (V, C), N(0, 1) init.
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, Philox& rng, DType dtype = DType::f32);
  Tensor forward(const Tensor& indices) const;
  const Tensor& weight() const { return weight_; }
  int64_t vocab() const { return vocab_; }
  int64_t dim() const { return dim_; }

 protected:
  // For StableEmbedding: the same table with another init.
  Embedding(int64_t vocab, int64_t dim, Tensor weight);

 private:
  int64_t vocab_, dim_;
  Tensor weight_;  // (V, C)
};

// Normalizes the last axis to zero mean and unit variance, then scales by
// weight (C, ones) and shifts by bias (C, zeros).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;  // (..., C) -> (..., C)
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  int64_t dim_;
  double eps_;
  Tensor weight_, bias_;  // (C), (C)
};

// The 8-bit optimizers paper's stable embedding: Xavier-uniform init of the
// table (U(-a, a), a = sqrt(6 / (V + C))), a LayerNorm right after the
// lookup (before any position embedding is added), and a forced 32-bit
// optimizer state for the table's weight: force_optim_bits("weight", 32),
// which make_optimizer(Module, config) applies after the config's
// overrides, so even bits: 8 keeps it 32-bit. Parameters: weight (V, C),
// norm.weight (C), norm.bias (C).
class StableEmbedding : public Embedding {
 public:
  StableEmbedding(int64_t vocab, int64_t dim, Philox& rng,
                  DType dtype = DType::f32);
  Tensor forward(const Tensor& indices) const;
  const LayerNorm& norm() const { return *norm_; }

 private:
  std::shared_ptr<LayerNorm> norm_;
};

}  // namespace kbit
