// RuleOptimizer (optim/rule_optimizer.h): settings, init state, apply
// update, and the raw state stream.
#include "optim/rule_optimizer.h"

#include <algorithm>
#include <cmath>
#include <istream>
#include <ostream>

#include "kernels/cpu/optim_update.h"

namespace kbit {
namespace {

using cpu::BlockwiseRule;

constexpr int64_t kDefaultBlock8 = 256;
constexpr int64_t kDefaultBlock4 = 128;
// Parameter names listed in an unmatched-pattern message.
constexpr size_t kNamesShown = 8;

BlockwiseRule rule_of(const OptimConfig& c) {
  const std::string& n = c.name;
  if (n == "sgd") {
    return c.nesterov ? BlockwiseRule::nesterov : BlockwiseRule::momentum;
  }
  if (n == "adam" || n == "adamw") return BlockwiseRule::adam;
  if (n == "rmsprop") return BlockwiseRule::rmsprop;
  if (n == "adagrad") return BlockwiseRule::adagrad;
  if (n == "lion") return BlockwiseRule::lion;
  if (n == "lamb") return BlockwiseRule::lamb;
  return BlockwiseRule::lars;
}

// True for rules whose only state is non-negative.
bool unsigned_state1(BlockwiseRule r) {
  return r == BlockwiseRule::rmsprop || r == BlockwiseRule::adagrad;
}

// Codebook names for `map` at `bits`: signed and unsigned.
std::pair<std::string, std::string> map_names(const std::string& map,
                                              int bits) {
  if (bits == 8) return {map, "u" + map};  // dynamic/udynamic, linear/ulinear
  return {map + "4", "ulinear_nz"};
}

std::string names_list(const std::vector<NamedTensor>& params) {
  std::string s;
  for (size_t i = 0; i < params.size() && i < kNamesShown; ++i) {
    s += (i ? ", " : "") + params[i].first;
  }
  if (params.size() > kNamesShown) {
    s += str(", ... (", params.size(), " in all)");
  }
  return s.empty() ? "none" : s;
}

// ---- raw stream helpers ----

template <typename T>
void put(std::ostream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

void put_bytes(std::ostream& out, const void* data, uint64_t n) {
  put(out, n);
  out.write(static_cast<const char*>(data), std::streamsize(n));
}

void put_string(std::ostream& out, const std::string& s) {
  put_bytes(out, s.data(), s.size());
}

struct Reader {
  std::istream& in;

  void raw(void* data, uint64_t n, const char* field) {
    in.read(static_cast<char*>(data), std::streamsize(n));
    KBIT_USER_CHECK(in.gcount() == std::streamsize(n),
                    "[load_state] truncated optimizer state: expected ", n,
                    " bytes of ", field, ", got ", in.gcount());
  }
  template <typename T>
  T get(const char* field) {
    T v{};
    raw(&v, sizeof(T), field);
    return v;
  }
  // A length-prefixed byte string of exactly `want` bytes into data.
  void bytes(void* data, uint64_t want, const std::string& what) {
    uint64_t n = get<uint64_t>("a length");
    KBIT_USER_CHECK(n == want, "[load_state] expected ", want, " bytes of ",
                    what, ", got ", n);
    raw(data, n, what.c_str());
  }
  std::string string(const char* field) {
    uint64_t n = get<uint64_t>(field);
    KBIT_USER_CHECK(n < (uint64_t(1) << 16), "[load_state] expected a short ",
                    field, ", got length ", n);
    std::string s(n, '\0');
    raw(s.data(), n, field);
    return s;
  }
};

const char* kind_name(StateBuffer::Kind k) {
  return k == StateBuffer::Kind::f32  ? "32-bit"
         : k == StateBuffer::Kind::q8 ? "8-bit"
                                      : "4-bit";
}

}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  // Iterative wildcard match with backtracking to the last '*'.
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

RuleOptimizer::RuleOptimizer(
    std::vector<NamedTensor> params, OptimConfig config,
    std::vector<std::pair<std::string, int>> forced_bits)
    : Optimizer(std::move(params), std::move(config)) {
  const OptimConfig& c = this->config();
  rule_ = rule_of(c);
  stateless_ = c.name == "sgd" && c.momentum == 0;
  n_states_ = stateless_ ? 0 : cpu::blockwise_num_states(rule_);
  resolve_settings(forced_bits);
}

void RuleOptimizer::resolve_settings(
    const std::vector<std::pair<std::string, int>>& forced_bits) {
  const OptimConfig& c = config();
  const auto& ps = params();
  std::vector<bool> matched(c.overrides.size(), false);
  settings_.clear();
  for (const auto& [name, p] : ps) {
    int bits = c.bits, block = c.block_size, pct = c.percentile_clipping;
    std::string map = c.map;
    bool blockwise = c.blockwise;
    int64_t min8 = c.min_8bit_size;
    double wd = c.weight_decay;
    for (size_t j = 0; j < c.overrides.size(); ++j) {
      const OptimOverride& o = c.overrides[j];
      if (!glob_match(o.pattern, name)) continue;
      matched[j] = true;
      bits = o.bits.value_or(bits);
      block = o.block_size.value_or(block);
      map = o.map.value_or(map);
      blockwise = o.blockwise.value_or(blockwise);
      min8 = o.min_8bit_size.value_or(min8);
      pct = o.percentile_clipping.value_or(pct);
      wd = o.weight_decay.value_or(wd);
    }
    for (const auto& [forced, fbits] : forced_bits) {
      if (forced == name) bits = fbits;
    }
    if (p.numel() < min8) bits = 32;

    ParamSettings s;
    s.bits = bits;
    s.percentile_clipping = pct;
    s.weight_decay = wd;
    if (bits < 32) {
      s.block_size = !blockwise  ? 0
                     : block     ? block
                     : bits == 8 ? kDefaultBlock8
                                 : kDefaultBlock4;
      std::tie(s.map1, s.map2) = map_names(map, bits);
      if (unsigned_state1(rule_)) s.map1 = s.map2;
    }
    settings_.push_back(std::move(s));
  }
  for (size_t j = 0; j < matched.size(); ++j) {
    KBIT_USER_CHECK(matched[j], "optim.overrides[", j, "].pattern: '",
                    c.overrides[j].pattern,
                    "' matches no parameter; parameters are: ", names_list(ps));
  }
}

// ---- init state ----

StateBuffer RuleOptimizer::make_buffer(size_t i, int k) const {
  const ParamSettings& s = settings_[i];
  const Shape& shape = params()[i].second.shape();
  if (s.bits == 32) return StateBuffer::zeros_f32(shape);
  return StateBuffer::zeros_quant(shape, s.block_size,
                                  state_codebook(k == 0 ? s.map1 : s.map2));
}

ParamState& RuleOptimizer::init_state(size_t i) {
  if (ParamState* st = states_.find(i)) return *st;
  ParamState& st = states_.create(i);
  for (int k = 0; k < n_states_; ++k) st.buffers.push_back(make_buffer(i, k));
  return st;
}

// ---- apply update ----

cpu::BlockwiseHyper RuleOptimizer::hyper(size_t i, int64_t step) const {
  const OptimConfig& c = config();
  cpu::BlockwiseHyper h;
  h.lr = float(c.lr);
  h.beta1 = float(c.beta1);
  h.beta2 = float(c.beta2);
  if (c.name == "sgd" || c.name == "lars") h.beta1 = float(c.momentum);
  if (c.name == "rmsprop") h.beta1 = float(c.alpha);
  h.eps = float(c.eps);
  h.weight_decay = float(settings_[i].weight_decay);
  h.step = step;
  // The momentum rules need no bias correction; the kernels take mu = 0 at
  // t = 1, which only changes Nesterov's look-ahead there (the state is 0):
  // from t = 2 on mu = momentum, as PyTorch's SGD has it at every step.
  if (rule_ == BlockwiseRule::momentum || rule_ == BlockwiseRule::nesterov ||
      rule_ == BlockwiseRule::lars) {
    h.step = std::max<int64_t>(step, 2);
  }
  h.decoupled = c.name != "adam";
  return h;
}

float RuleOptimizer::trust_scale(const cpu::BlockwiseNorms& n) const {
  const double pn = std::sqrt(n.param_sq), un = std::sqrt(n.update_sq);
  const OptimConfig& c = config();
  if (rule_ == BlockwiseRule::lamb) {
    if (!(pn > 0) || !(un > 0)) return 1.0f;
    return float(std::min(pn / un, c.max_trust_ratio));
  }
  if (c.max_unorm > 0 && un > c.max_unorm * pn) {
    return float(c.max_unorm * pn / un);
  }
  return 1.0f;
}

void RuleOptimizer::clip_percentile(ParamState& st, int percentile, float* g,
                                    int64_t n) {
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += double(g[i]) * g[i];
  if (st.gnorm_ring.empty()) st.gnorm_ring.assign(kPercentileRing, float(sq));
  st.gnorm_ring[size_t((st.step - 1) % kPercentileRing)] = float(sq);
  std::vector<float> sorted = st.gnorm_ring;
  std::nth_element(sorted.begin(), sorted.begin() + (percentile - 1),
                   sorted.end());
  const double clip_sq = sorted[size_t(percentile - 1)];
  if (!(sq > clip_sq)) return;
  const float scale = float(std::sqrt(clip_sq / sq));
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
}

void RuleOptimizer::apply_f32(const cpu::BlockwiseHyper& h, float* p,
                              const float* g, float* s1, float* s2, int64_t n) {
  cpu::BlockwiseHyper hh = h;
  if (rule_ == BlockwiseRule::lamb || rule_ == BlockwiseRule::lars) {
    hh.update_scale =
        trust_scale(cpu::rule_norms_f32(rule_, h, p, g, s1, s2, n));
  }
  cpu::rule_update_f32(rule_, hh, p, g, s1, s2, n);
}

void RuleOptimizer::apply_blockwise(const cpu::BlockwiseHyper& h, float* p,
                                    const float* g, ParamState& st, int64_t n) {
  cpu::BlockwiseArgs a;
  a.n = n;
  a.block_size = st.buffers[0].block_size();
  a.bits = st.buffers[0].bits();
  a.p = p;
  a.g = g;
  a.s1 = st.buffers[0].quant_state();
  if (n_states_ == 2) a.s2 = st.buffers[1].quant_state();
  cpu::BlockwiseHyper hh = h;
  if (rule_ == BlockwiseRule::lamb || rule_ == BlockwiseRule::lars) {
    hh.update_scale = trust_scale(cpu::blockwise_norms(rule_, h, a));
  }
  cpu::blockwise_step(rule_, hh, a);
}

void RuleOptimizer::apply_tensorwise(const cpu::BlockwiseHyper& h, float* p,
                                     const float* g, ParamState& st,
                                     int64_t n) {
  // Pass 1: decode into f32 workspaces and update there.
  Tensor w1 = st.buffers[0].dequantize(MemTag::workspace);
  Tensor w2 =
      n_states_ == 2 ? st.buffers[1].dequantize(MemTag::workspace) : Tensor();
  float* s1 = w1.data<float>();
  float* s2 = n_states_ == 2 ? w2.data<float>() : nullptr;
  apply_f32(h, p, g, s1, s2, n);
  // Pass 2: the new global absmax, then the codes.
  st.buffers[0].assign(s1);
  if (n_states_ == 2) st.buffers[1].assign(s2);
}

void RuleOptimizer::update(size_t i, const Tensor& param, const Tensor& grad,
                           int64_t /*step*/) {
  // Init state.
  ParamState& st = init_state(i);
  ++st.step;
  float* p = param.data<float>();
  float* g = grad.data<float>();
  const int64_t n = param.numel();
  const ParamSettings& s = settings_[i];
  if (s.percentile_clipping < 100) {
    clip_percentile(st, s.percentile_clipping, g, n);
  }

  // Apply update.
  if (stateless_) {
    cpu::SgdHyper h{config().lr, 0.0, s.weight_decay, false};
    cpu::sgd_update(h, p, g, nullptr, n);
    return;
  }
  const cpu::BlockwiseHyper h = hyper(i, st.step);
  if (!st.buffers[0].quantized()) {
    apply_f32(h, p, g, st.buffers[0].f32_data(),
              n_states_ == 2 ? st.buffers[1].f32_data() : nullptr, n);
  } else if (st.buffers[0].block_size() == 0) {
    apply_tensorwise(h, p, g, st, n);
  } else {
    apply_blockwise(h, p, g, st, n);
  }
}

// ---- save / load ----

void RuleOptimizer::save_buffers(std::ostream& out) const {
  put(out, uint64_t(params().size()));
  for (size_t i = 0; i < params().size(); ++i) {
    put_string(out, params()[i].first);
    const ParamState* st = states_.find(i);
    put(out, uint8_t(st != nullptr));
    if (!st) continue;
    put(out, st->step);
    put_bytes(out, st->gnorm_ring.data(),
              st->gnorm_ring.size() * sizeof(float));
    put(out, uint32_t(st->buffers.size()));
    for (const StateBuffer& b : st->buffers) {
      put(out, uint8_t(b.kind()));
      put(out, b.numel());
      put(out, b.block_size());
      put_string(out, b.quantized() ? b.codebook()->name : "");
      if (!b.quantized()) {
        put_bytes(out, b.values().data<float>(), b.values().nbytes());
      } else {
        put_bytes(out, b.codes().data<uint8_t>(), b.codes().nbytes());
        put_bytes(out, b.absmax().data<float>(), b.absmax().nbytes());
      }
    }
  }
}

void RuleOptimizer::load_buffers(std::istream& in) {
  Reader r{in};
  const auto& ps = params();
  const uint64_t count = r.get<uint64_t>("the parameter count");
  KBIT_USER_CHECK(count == ps.size(), "[load_state] expected state for ",
                  ps.size(), " parameters, got ", count);
  StateStore loaded;  // filled completely before it replaces states_
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string& name = ps[i].first;
    const std::string got = r.string("a parameter name");
    KBIT_USER_CHECK(got == name, "[load_state] expected parameter '", name,
                    "' at position ", i, ", got '", got, "'");
    if (!r.get<uint8_t>("a state flag")) continue;
    ParamState& st = loaded.create(i);
    st.step = r.get<int64_t>("a step count");
    const uint64_t ring = r.get<uint64_t>("the clipping ring length");
    KBIT_USER_CHECK(ring == 0 || ring == kPercentileRing * sizeof(float),
                    "[load_state] expected a clipping ring of 0 or ",
                    kPercentileRing, " values for '", name, "', got ", ring,
                    " bytes");
    st.gnorm_ring.resize(ring / sizeof(float));
    r.raw(st.gnorm_ring.data(), ring, "the clipping ring");
    const uint32_t nbuf = r.get<uint32_t>("a buffer count");
    KBIT_USER_CHECK(int(nbuf) == n_states_, "[load_state] expected ", n_states_,
                    " state buffers for '", name, "', got ", nbuf);
    for (int k = 0; k < n_states_; ++k) {
      StateBuffer b = make_buffer(i, k);
      const auto kind = StateBuffer::Kind(r.get<uint8_t>("a buffer kind"));
      const int64_t numel = r.get<int64_t>("a buffer size");
      const int64_t block = r.get<int64_t>("a block size");
      const std::string cb = r.string("a codebook name");
      const std::string want_cb = b.quantized() ? b.codebook()->name : "";
      KBIT_USER_CHECK(kind == b.kind() && numel == b.numel() &&
                          block == b.block_size() && cb == want_cb,
                      "[load_state] state ", k + 1, " of '", name,
                      "' does not fit the ", "config: expected ",
                      kind_name(b.kind()), ", ", b.numel(),
                      " elements, block_size ", b.block_size(), ", codebook '",
                      want_cb, "'; got ", kind_name(kind), ", ", numel,
                      " elements, block_size ", block, ", codebook '", cb, "'");
      const std::string what = str("state ", k + 1, " of '", name, "'");
      if (!b.quantized()) {
        r.bytes(b.values().data<float>(), b.values().nbytes(), what);
      } else {
        r.bytes(b.codes().data<uint8_t>(), b.codes().nbytes(), what);
        r.bytes(b.absmax().data<float>(), b.absmax().nbytes(), what);
      }
      st.buffers.push_back(std::move(b));
    }
  }
  states_ = std::move(loaded);
}

}  // namespace kbit
