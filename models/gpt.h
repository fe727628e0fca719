// GPT: a decoder-only transformer on byte tokens.
//
// B batch, T time (T <= block_size), C = d_model, H = n_head, V vocab.
// Token and position embeddings, n_layer pre-LayerNorm blocks
// (x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))), a final LayerNorm ln_f
// and the output head tied to the token table: logits = ln_f(x) wte^T.
// No dropout. Parameter names (checkpoints and optimizer overrides use
// them): wte.weight (V, C) [+ wte.norm.{weight,bias} when stable],
// wpe.weight (block_size, C), h.{i}.ln_1.{weight,bias},
// h.{i}.attn.qkv.{weight (3C, C), bias}, h.{i}.attn.proj.{weight, bias},
// h.{i}.ln_2.{weight,bias}, h.{i}.mlp.fc.{weight (4C, C), bias},
// h.{i}.mlp.proj.{weight, bias}, ln_f.{weight,bias}.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/philox.h"
#include "models/embedding.h"
#include "models/linear.h"
#include "models/module.h"

namespace kbit {

struct GPTConfig {
  int64_t vocab_size = 256;
  int64_t block_size = 128;  // context length T
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 128;          // C; must divide by n_head
  int64_t mlp_ratio = 4;          // hidden = mlp_ratio * C, GELU (tanh form)
  bool stable_embedding = false;  // token table as StableEmbedding
};

// x (B, T, C) -> proj(causal_attention(qkv(x))) (B, T, C).
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t d_model, int64_t n_head, Philox& rng,
                      DType dtype);
  Tensor forward(const Tensor& x) const;
  Linear& qkv() { return *qkv_; }
  Linear& proj() { return *proj_; }

 private:
  int64_t n_head_;
  std::shared_ptr<Linear> qkv_;   // C -> 3C
  std::shared_ptr<Linear> proj_;  // C -> C
};

// x (B, T, C) -> proj(gelu(fc(x))) (B, T, C).
class GPTMLP : public Module {
 public:
  GPTMLP(int64_t d_model, int64_t hidden, Philox& rng, DType dtype);
  Tensor forward(const Tensor& x) const;
  Linear& fc() { return *fc_; }
  Linear& proj() { return *proj_; }

 private:
  std::shared_ptr<Linear> fc_;    // C -> hidden
  std::shared_ptr<Linear> proj_;  // hidden -> C
};

// One pre-LayerNorm block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
class GPTBlock : public Module {
 public:
  GPTBlock(const GPTConfig& config, Philox& rng, DType dtype);
  Tensor forward(const Tensor& x) const;  // (B, T, C) -> (B, T, C)
  CausalSelfAttention& attn() { return *attn_; }
  GPTMLP& mlp() { return *mlp_; }

 private:
  std::shared_ptr<LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<CausalSelfAttention> attn_;
  std::shared_ptr<GPTMLP> mlp_;
};

class GPT : public Module {
 public:
  // Throws Error on a bad config (sizes < 1, d_model not a multiple of
  // n_head). dtype f32 for training, f64 for gradient checks.
  GPT(const GPTConfig& config, Philox& rng, DType dtype = DType::f32);
  // idx (B, T) i32, 1 <= T <= block_size, values in [0, vocab) ->
  // logits (B, T, vocab).
  Tensor forward(const Tensor& idx) const;
  // Mean cross-entropy of forward(idx) against targets (B, T) i32.
  Tensor loss(const Tensor& idx, const Tensor& targets) const;
  const GPTConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }

 private:
  Tensor hidden(const Tensor& idx) const;  // ln_f(x) (B, T, C)
  Tensor token_embedding(const Tensor& idx) const;
  const Tensor& token_table() const;  // wte.weight (V, C)

  GPTConfig config_;
  DType dtype_;
  std::shared_ptr<Embedding> wte_;  // an Embedding or a StableEmbedding
  std::shared_ptr<StableEmbedding> wte_stable_;  // set when stable
  std::shared_ptr<Embedding> wpe_;
  std::vector<std::shared_ptr<GPTBlock>> blocks_;
  std::shared_ptr<LayerNorm> ln_f_;
};

}  // namespace kbit
