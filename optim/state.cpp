// Optimizer state buffers (optim/state.h).
#include "optim/state.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "quant/codebook.h"

namespace kbit {
namespace {

// Elements below which one thread does a loop (the fork costs more).
constexpr int64_t kParallelThreshold = int64_t(1) << 15;
// Grid points of the fixed quantile fits (exact quantiles of the law).
constexpr int64_t kQuantileGrid = 1 << 14;

// The fixed sample a quantile codebook is fitted to: N(0,1) at evenly
// spaced probabilities, or its squares (chi-square with one degree).
std::vector<float> quantile_sample(bool squared) {
  std::vector<float> s(kQuantileGrid);
  for (int64_t i = 0; i < kQuantileGrid; ++i) {
    double z = quant::normal_quantile((double(i) + 0.5) / kQuantileGrid);
    s[size_t(i)] = float(squared ? z * z : z);
  }
  return s;
}

// Bits of a trailing number in `name` after `prefix`, or 8.
bool parse_quantile(const std::string& name, const std::string& prefix,
                    int& bits) {
  if (name.rfind(prefix, 0) != 0) return false;
  std::string rest = name.substr(prefix.size());
  if (rest.empty()) {
    bits = 8;
    return true;
  }
  if (rest == "4") {
    bits = 4;
    return true;
  }
  return false;
}

quant::Codebook build_codebook(const std::string& name) {
  int bits = 8;
  bool squared = parse_quantile(name, "uquantile", bits);
  if (squared || parse_quantile(name, "quantile", bits)) {
    std::vector<float> s = quantile_sample(squared);
    return quant::make_quantile(s.data(), int64_t(s.size()), bits);
  }
  KBIT_USER_CHECK(quant::is_codebook_name(name),
                  "[optim] unknown state codebook '", name, "'");
  return quant::make_codebook(name);
}

std::unique_ptr<StateCodebook> make_state_codebook(const std::string& name) {
  quant::Codebook cb = build_codebook(name);
  const int bits = cb.bits();
  KBIT_USER_CHECK(bits == 8 || bits == 4, "[optim] expected an 8- or 4-bit ",
                  "state codebook, got '", name, "' of ", bits, " bits");
  std::vector<float> v = cb.codes();
  v.resize(size_t(1) << bits, v.back());  // pad: never the nearest code
  cpu::BlockCodebook block(v.data(), int(v.size()));
  return std::unique_ptr<StateCodebook>(
      new StateCodebook{name, bits, std::move(v), std::move(block)});
}

}  // namespace

const StateCodebook& state_codebook(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<StateCodebook>> registry;
  std::lock_guard<std::mutex> lock(mu);
  auto it = registry.find(name);
  if (it == registry.end()) {
    it = registry.emplace(name, make_state_codebook(name)).first;
  }
  return *it->second;
}

StateBuffer StateBuffer::zeros_f32(const Shape& shape) {
  StateBuffer b;
  b.kind_ = Kind::f32;
  b.shape_ = shape;
  b.values_ = Tensor::empty(shape, DType::f32, MemTag::optim_state);
  // Zeroed by all threads: the first touch of fresh pages dominates (about
  // 2 s for 800 MB on one thread here), and it splits across threads.
  float* v = b.values_.data<float>();
  int64_t n = b.values_.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) v[i] = 0.f;
  return b;
}

StateBuffer StateBuffer::zeros_quant(const Shape& shape, int64_t block_size,
                                     const StateCodebook& cb) {
  KBIT_CHECK(block_size == 0 || (block_size >= cpu::kBlockwiseMinBlock &&
                                 block_size <= cpu::kBlockwiseMaxBlock &&
                                 (block_size & (block_size - 1)) == 0),
             "[optim] expected block_size 0 or a power of two in [32, 4096], "
             "got ",
             block_size);
  StateBuffer b;
  b.kind_ = cb.bits == 8 ? Kind::q8 : Kind::q4;
  b.shape_ = shape;
  b.block_size_ = block_size;
  b.codebook_ = &cb;
  const int64_t n = shape_numel(shape);
  const int64_t bs = b.effective_block_size();
  const int64_t nb = n == 0 ? 0 : (n + bs - 1) / bs;
  const int64_t nbytes = cb.bits == 8 ? n : (n + 1) / 2;
  b.codes_ = Tensor::empty({nbytes}, DType::u8, MemTag::optim_state);
  b.absmax_ = Tensor::zeros({nb}, DType::f32, MemTag::optim_state);
  // Absmax 0 decodes every code to 0; the codes are those of 0 anyway.
  uint8_t zero = uint8_t(cb.block.quantize_index(0.0f));
  if (cb.bits == 4) zero = uint8_t(zero | (zero << 4));
  if (nbytes > 0) std::memset(b.codes_.data<uint8_t>(), zero, size_t(nbytes));
  if (cb.bits == 4 && n % 2 == 1) {
    b.codes_.data<uint8_t>()[nbytes - 1] &= 0xF0;  // the unused low nibble
  }
  return b;
}

int StateBuffer::bits() const {
  return kind_ == Kind::f32 ? 32 : kind_ == Kind::q8 ? 8 : 4;
}

int64_t StateBuffer::effective_block_size() const {
  return block_size_ > 0 ? block_size_ : std::max<int64_t>(1, numel());
}

float* StateBuffer::f32_data() const {
  KBIT_CHECK(kind_ == Kind::f32, "[optim] expected an f32 state buffer");
  return values_.data<float>();
}

cpu::QuantState StateBuffer::quant_state() const {
  KBIT_CHECK(quantized(), "[optim] expected a quantized state buffer");
  return {codes_.data<uint8_t>(), absmax_.data<float>(), &codebook_->block};
}

Tensor StateBuffer::dequantize(MemTag tag) const {
  Tensor out = Tensor::empty(shape_, DType::f32, tag);
  dequantize_to(out.data<float>());
  return out;
}

void StateBuffer::dequantize_to(float* x) const {
  const int64_t n = numel();
  if (!quantized()) {
    if (n > 0) std::memcpy(x, f32_data(), size_t(n) * sizeof(float));
    return;
  }
  const uint8_t* c = codes_.data<uint8_t>();
  const float* am = absmax_.data<float>();
  const float* code = codebook_->values.data();
  const int64_t bs = effective_block_size();
  const int64_t nb = absmax_.numel();
  const bool four = kind_ == Kind::q4;
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t begin = blk * bs, end = std::min(n, begin + bs);
    const float a = am[blk];
    if (four) {
      for (int64_t i = begin; i < end; ++i) {
        x[i] = code[(c[i / 2] >> (i % 2 ? 0 : 4)) & 0xF] * a;
      }
    } else {
      for (int64_t i = begin; i < end; ++i) x[i] = code[c[i]] * a;
    }
  }
}

void StateBuffer::assign(const float* x) {
  const int64_t n = numel();
  if (!quantized()) {
    if (n > 0) std::memcpy(f32_data(), x, size_t(n) * sizeof(float));
    return;
  }
  const int64_t bs = effective_block_size();
  const int64_t nb = absmax_.numel();
  float* am = absmax_.data<float>();
  uint8_t* c = codes_.data<uint8_t>();
  const bool four = kind_ == Kind::q4;
  std::vector<float> scaled(size_t(std::min(bs, n)));
  std::vector<uint8_t> idx(scaled.size());
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t begin = blk * bs, len = std::min(bs, n - begin);
    float amax = 0.0f;
    for (int64_t i = 0; i < len; ++i) {
      amax = std::max(amax, std::fabs(x[begin + i]));
    }
    am[blk] = amax;
    const float inv = amax >= FLT_MIN ? 1.0f / amax : 0.0f;  // as kernels
    for (int64_t i = 0; i < len; ++i) scaled[size_t(i)] = x[begin + i] * inv;
    cpu::code_indices(codebook_->block, scaled.data(), len, idx.data());
    for (int64_t i = 0; i < len; ++i) {
      const int64_t e = begin + i;
      if (!four) {
        c[e] = idx[size_t(i)];
      } else if (e % 2 == 0) {
        c[e / 2] = uint8_t(idx[size_t(i)] << 4);
      } else {
        c[e / 2] = uint8_t(c[e / 2] | idx[size_t(i)]);
      }
    }
  }
}

int64_t StateBuffer::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&values_, &codes_, &absmax_}) {
    if (t->defined()) total += int64_t(t->storage()->nbytes());
  }
  return total;
}

ParamState& StateStore::get(size_t i, const Tensor& param, int n_buffers) {
  ParamState* st = find(i);
  if (st) return *st;
  ParamState& fresh = create(i);
  for (int k = 0; k < n_buffers; ++k) {
    fresh.buffers.push_back(StateBuffer::zeros_f32(param.shape()));
  }
  return fresh;
}

ParamState* StateStore::find(size_t i) {
  return i < states_.size() && created_[i] ? &states_[i] : nullptr;
}

const ParamState* StateStore::find(size_t i) const {
  return i < states_.size() && created_[i] ? &states_[i] : nullptr;
}

ParamState& StateStore::create(size_t i) {
  if (states_.size() <= i) {
    states_.resize(i + 1);
    created_.resize(i + 1, false);
  }
  KBIT_CHECK(!created_[i], "[optim] state of parameter ", i, " exists");
  created_[i] = true;
  states_[i] = ParamState{};
  return states_[i];
}

void StateStore::clear() {
  states_.clear();
  created_.clear();
}

int64_t StateStore::bytes() const {
  int64_t total = 0;
  for (const ParamState& st : states_) {
    for (const StateBuffer& b : st.buffers) total += b.bytes();
  }
  return total;
}

}  // namespace kbit
