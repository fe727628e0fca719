// GPT modules (models/gpt.h). Init: matrices and embedding tables
// N(0, 0.02) (a stable token table keeps its Xavier init), the two residual
// projections of each block N(0, 0.02 / sqrt(2 n_layer)), biases 0,
// LayerNorm weight 1 and bias 0.
#include "models/gpt.h"

#include <cmath>
#include <string>

#include "autograd/ops.h"

namespace kbit {
namespace {

constexpr double kInitStd = 0.02;

// Overwrites p with N(0, std) draws (no autograd history).
void normal_init(const Tensor& p, Philox& rng, double std) {
  p.copy_(Tensor::randn(p.shape(), rng, p.dtype(), 0.0, std));
}

// A Linear with weight N(0, std) and zero bias.
std::shared_ptr<Linear> make_linear(int64_t in, int64_t out, double std,
                                    Philox& rng, DType dtype) {
  auto l = std::make_shared<Linear>(in, out, true, rng, dtype);
  normal_init(l->weight(), rng, std);
  l->bias().fill_(0.0);
  return l;
}

double residual_std(int64_t n_layer) {
  return kInitStd / std::sqrt(2.0 * double(n_layer));
}

void check_config(const GPTConfig& c) {
  KBIT_CHECK(c.vocab_size >= 1 && c.block_size >= 1 && c.n_layer >= 1 &&
                 c.n_head >= 1 && c.d_model >= 1 && c.mlp_ratio >= 1,
             "[gpt] expected vocab_size, block_size, n_layer, n_head, "
             "d_model and mlp_ratio >= 1, got ",
             c.vocab_size, ", ", c.block_size, ", ", c.n_layer, ", ", c.n_head,
             ", ", c.d_model, ", ", c.mlp_ratio);
  KBIT_CHECK(c.d_model % c.n_head == 0, "[gpt] expected d_model ", c.d_model,
             " to be a multiple of n_head, got n_head ", c.n_head);
}

void check_tokens(const Tensor& t, const char* what, int64_t block_size) {
  KBIT_CHECK(t.defined() && t.dim() == 2 &&
                 (t.dtype() == DType::i32 || t.dtype() == DType::i64),
             "[gpt] expected ", what, " (B, T) of dtype i32, got ",
             t.defined() ? t.str() : std::string("an undefined tensor"));
  KBIT_CHECK(t.shape(0) >= 1 && t.shape(1) >= 1 && t.shape(1) <= block_size,
             "[gpt] expected ", what,
             " (B, T) with B >= 1 and 1 <= T <= ", block_size, ", got ",
             shape_str(t.shape()));
}

}  // namespace

// ---- CausalSelfAttention ----

CausalSelfAttention::CausalSelfAttention(int64_t d_model, int64_t n_head,
                                         Philox& rng, DType dtype)
    : n_head_(n_head) {
  qkv_ = register_module(
      "qkv", make_linear(d_model, 3 * d_model, kInitStd, rng, dtype));
  proj_ = register_module("proj",
                          make_linear(d_model, d_model, kInitStd, rng, dtype));
}

Tensor CausalSelfAttention::forward(const Tensor& x) const {
  Tensor qkv = qkv_->forward(x);  // (B, T, 3C)
  return proj_->forward(causal_attention(qkv, n_head_));
}

// ---- GPTMLP ----

GPTMLP::GPTMLP(int64_t d_model, int64_t hidden, Philox& rng, DType dtype) {
  fc_ =
      register_module("fc", make_linear(d_model, hidden, kInitStd, rng, dtype));
  proj_ = register_module("proj",
                          make_linear(hidden, d_model, kInitStd, rng, dtype));
}

Tensor GPTMLP::forward(const Tensor& x) const {
  // gelu(fc(x)) with the bias added inside the GELU pass.
  Tensor h = bias_gelu(linear(x, fc_->weight()), fc_->bias());
  return proj_->forward(h);
}

// ---- GPTBlock ----

GPTBlock::GPTBlock(const GPTConfig& c, Philox& rng, DType dtype) {
  ln_1_ = register_module("ln_1",
                          std::make_shared<LayerNorm>(c.d_model, 1e-5, dtype));
  attn_ = register_module("attn", std::make_shared<CausalSelfAttention>(
                                      c.d_model, c.n_head, rng, dtype));
  ln_2_ = register_module("ln_2",
                          std::make_shared<LayerNorm>(c.d_model, 1e-5, dtype));
  mlp_ = register_module(
      "mlp",
      std::make_shared<GPTMLP>(c.d_model, c.mlp_ratio * c.d_model, rng, dtype));
  normal_init(attn_->proj().weight(), rng, residual_std(c.n_layer));
  normal_init(mlp_->proj().weight(), rng, residual_std(c.n_layer));
}

Tensor GPTBlock::forward(const Tensor& x) const {
  Tensor h = add(x, attn_->forward(ln_1_->forward(x)));
  return add(h, mlp_->forward(ln_2_->forward(h)));
}

// ---- GPT ----

GPT::GPT(const GPTConfig& config, Philox& rng, DType dtype)
    : config_(config), dtype_(dtype) {
  check_config(config_);
  const int64_t V = config_.vocab_size, C = config_.d_model;
  if (config_.stable_embedding) {
    wte_stable_ = register_module(
        "wte", std::make_shared<StableEmbedding>(V, C, rng, dtype));
    wte_ = wte_stable_;
  } else {
    wte_ =
        register_module("wte", std::make_shared<Embedding>(V, C, rng, dtype));
    normal_init(wte_->weight(), rng, kInitStd);
  }
  wpe_ = register_module(
      "wpe", std::make_shared<Embedding>(config_.block_size, C, rng, dtype));
  normal_init(wpe_->weight(), rng, kInitStd);
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    blocks_.push_back(
        register_module("h." + std::to_string(i),
                        std::make_shared<GPTBlock>(config_, rng, dtype)));
  }
  ln_f_ = register_module("ln_f", std::make_shared<LayerNorm>(C, 1e-5, dtype));
}

const Tensor& GPT::token_table() const {
  return wte_->weight();
}

Tensor GPT::token_embedding(const Tensor& idx) const {
  return wte_stable_ ? wte_stable_->forward(idx) : wte_->forward(idx);
}

Tensor GPT::hidden(const Tensor& idx) const {
  check_tokens(idx, "idx", config_.block_size);
  const int64_t Tn = idx.shape(1);
  // x (B, T, C) = wte[idx] + wpe[0:T] (broadcast over the batch).
  Tensor x = add(token_embedding(idx), slice(wpe_->weight(), 0, 0, Tn));
  for (const auto& block : blocks_) x = block->forward(x);
  return ln_f_->forward(x);
}

Tensor GPT::forward(const Tensor& idx) const {
  return linear(hidden(idx), token_table());  // (B, T, V)
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets) const {
  check_tokens(targets, "targets", config_.block_size);
  KBIT_CHECK(targets.shape() == idx.shape(),
             "[gpt] expected targets of the shape of idx ",
             shape_str(idx.shape()), ", got ", shape_str(targets.shape()));
  const int64_t N = idx.numel(), V = config_.vocab_size;
  Tensor logits = reshape(forward(idx), {N, V});  // (B T, V)
  return cross_entropy(logits, targets.contiguous().view({N}));
}

}  // namespace kbit
