// Quantized optimizer states: memory, settings and overrides, config
// refusals, the non-finite policy, tensor-wise states, percentile clipping,
// and exact save / load.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/philox.h"
#include "optim/rule_optimizer.h"

using namespace kbit;

namespace {

Tensor param(const Shape& shape, uint64_t seed) {
  Philox rng(seed);
  Tensor p = Tensor::randn(shape, rng, DType::f32, 0.0, 0.1, MemTag::param);
  p.set_requires_grad(true);
  return p;
}

void set_grads(const std::vector<NamedTensor>& ps, uint64_t seed) {
  Philox rng(seed);
  for (const auto& np : ps) {
    np.second.set_grad(Tensor::randn(np.second.shape(), rng, DType::f32, 0.0,
                                     0.01, MemTag::grad));
  }
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const uint8_t* p = static_cast<const uint8_t*>(t.storage()->data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

// Every raw byte of every state buffer of o.
std::vector<std::vector<uint8_t>> raw_states(const RuleOptimizer& o,
                                             size_t n_params) {
  std::vector<std::vector<uint8_t>> out;
  for (size_t i = 0; i < n_params; ++i) {
    const ParamState* st = o.state(i);
    if (!st) continue;
    for (const StateBuffer& b : st->buffers) {
      if (b.quantized()) {
        out.push_back(bytes_of(b.codes()));
        out.push_back(bytes_of(b.absmax()));
      } else {
        out.push_back(bytes_of(b.values()));
      }
    }
  }
  return out;
}

OptimConfig config8(const char* name) {
  OptimConfig c;
  c.name = name;
  c.bits = 8;
  return c;
}

}  // namespace

TEST_CASE("optim8: 8-bit AdamW state is about 2.03 B/param, small stay f32") {
  std::vector<NamedTensor> ps = {{"big", param({1024, 1024}, 1)},
                                 {"small", param({4095}, 2)}};
  auto opt = make_optimizer(ps, config8("adamw"));
  set_grads(ps, 3);
  REQUIRE(opt->step());
  const auto& ro = dynamic_cast<const RuleOptimizer&>(*opt);
  CHECK(ro.settings(0).bits == 8);
  CHECK(ro.settings(1).bits == 32);  // numel 4095 < min_8bit_size 4096
  // big: 2 x (1 code byte + 4 / 256 absmax bytes) = 2.03125 B/param.
  const int64_t big = 2 * (1024 * 1024 + 4 * 1024 * 1024 / 256);
  const int64_t small = 2 * 4 * 4095;
  CHECK(opt->state_bytes() == big + small);
  CHECK(double(big) / (1024 * 1024) == doctest::Approx(2.03125));
  CHECK(ro.state(0)->buffers[0].codebook()->name == "dynamic");
  CHECK(ro.state(0)->buffers[1].codebook()->name == "udynamic");

  // 4-bit: packed codes, block 128: 2 x (0.5 + 4 / 128) B/param.
  OptimConfig c4 = config8("adamw");
  c4.bits = 4;
  auto opt4 = make_optimizer({ps[0]}, c4);
  set_grads({ps[0]}, 4);
  REQUIRE(opt4->step());
  CHECK(opt4->state_bytes() == 2 * (1024 * 1024 / 2 + 4 * 1024 * 1024 / 128));
  const auto& r4 = dynamic_cast<const RuleOptimizer&>(*opt4);
  CHECK(r4.state(0)->buffers[0].codebook()->name == "dynamic4");
  CHECK(r4.state(0)->buffers[1].codebook()->name == "ulinear_nz");
}

TEST_CASE("optim8: maps, unsigned states and per-parameter overrides") {
  std::vector<NamedTensor> ps = {{"enc.weight", param({64, 128}, 1)},
                                 {"enc.bias", param({8192}, 2)},
                                 {"dec.weight", param({128, 64}, 3)}};
  OptimConfig c = config8("rmsprop");
  OptimOverride o1;
  o1.pattern = "enc.*";
  o1.map = "linear";
  o1.block_size = 64;
  OptimOverride o2;
  o2.pattern = "*.bi?s";
  o2.bits = 32;
  c.overrides = {o1, o2};
  RuleOptimizer opt(ps, c);
  CHECK(opt.settings(0).bits == 8);
  CHECK(opt.settings(0).block_size == 64);
  CHECK(opt.settings(0).map1 == "ulinear");  // rmsprop: unsigned state
  CHECK(opt.settings(1).bits == 32);         // later override wins
  CHECK(opt.settings(2).map1 == "udynamic");
  CHECK(opt.settings(2).block_size == 256);
  set_grads(ps, 4);
  REQUIRE(opt.step());
  CHECK(opt.state(0)->buffers[0].codebook()->name == "ulinear");
  CHECK(opt.state(0)->buffers[0].absmax().numel() == 64 * 128 / 64);
  CHECK(opt.state(1)->buffers[0].kind() == StateBuffer::Kind::f32);

  // Quantile maps: fixed fits, signed for momentum.
  OptimConfig q = config8("sgd");
  q.map = "quantile";
  RuleOptimizer oq({ps[0]}, q);
  set_grads({ps[0]}, 5);
  REQUIRE(oq.step());
  CHECK(oq.state(0)->buffers[0].codebook()->name == "quantile");

  CHECK(glob_match("*", ""));
  CHECK(glob_match("a*b?c", "axxbyc"));
  CHECK_FALSE(glob_match("a*b?c", "axxbc"));
  CHECK_FALSE(glob_match("enc.*", "dec.weight"));
}

TEST_CASE("optim8: bad settings are refused naming the key and choices") {
  std::vector<NamedTensor> ps = {{"w", param({4}, 1)}, {"b", param({2}, 2)}};
  auto refuse = [&](const OptimConfig& c, const std::string& msg) {
    CHECK_THROWS_WITH_AS(make_optimizer(ps, c), msg.c_str(), UserError);
  };
  OptimConfig c;
  c.name = "adamm";
  refuse(c,
         "optim.name: expected one of sgd, adam, adamw, rmsprop, "
         "adagrad, lion, lamb, lars, got 'adamm'");
  c = OptimConfig{};
  c.bits = 7;
  refuse(c, "optim.bits: expected one of 32, 8, 4, got 7");
  c.bits = 4;
  c.name = "lion";
  refuse(c,
         "optim.bits: 4-bit states exist for adam and adamw only, got 4 "
         "with 'lion' (choose 32 or 8)");
  c = OptimConfig{};
  for (int bad : {16, 8192, 100, -256}) {
    c.block_size = bad;
    refuse(c,
           "optim.block_size: expected 0 (the default: 256 for 8-bit, "
           "128 for 4-bit) or a power of two in 32..4096 (32, 64, ..., "
           "4096), got " +
               std::to_string(bad));
  }
  c = OptimConfig{};
  c.map = "nf4";
  refuse(c,
         "optim.map: expected one of dynamic, linear, quantile, got "
         "'nf4'");
  c = OptimConfig{};
  c.percentile_clipping = 0;
  refuse(c,
         "optim.percentile_clipping: expected a value in 1..100 (100 = "
         "off), got 0");
  c = OptimConfig{};
  OptimOverride o;
  o.pattern = "w";
  o.block_size = 5000;
  c.overrides = {o};
  refuse(c,
         "optim.overrides[0].block_size: expected 0 (the default: 256 "
         "for 8-bit, 128 for 4-bit) or a power of two in 32..4096 (32, "
         "64, ..., 4096), got 5000");
  o = OptimOverride{};
  o.pattern = "w";
  OptimOverride miss;
  miss.pattern = "enc.*";
  miss.bits = 32;
  c.overrides = {o, miss};
  refuse(c,
         "optim.overrides[1].pattern: 'enc.*' matches no parameter; "
         "parameters are: w, b");
}

TEST_CASE("optim8: a non-finite gradient leaves codes and absmax unchanged") {
  for (const char* name : {"adamw", "lion", "lamb"}) {
    std::vector<NamedTensor> ps = {{"w", param({64, 100}, 1)}};
    auto opt = make_optimizer(ps, config8(name));
    const auto& ro = dynamic_cast<const RuleOptimizer&>(*opt);
    set_grads(ps, 2);
    REQUIRE(opt->step());
    auto before = raw_states(ro, 1);
    auto p_before = ps[0].second.to_vector<float>();
    for (float bad : {NAN, INFINITY}) {
      set_grads(ps, 3);
      ps[0].second.grad().data<float>()[77] = bad;
      CHECK_FALSE(opt->step());
      CHECK(raw_states(ro, 1) == before);
      CHECK(ps[0].second.to_vector<float>() == p_before);
      CHECK(ro.state(0)->step == 1);
    }
    CHECK(opt->skipped_steps() == 2);
  }
}

TEST_CASE("optim8: blockwise false keeps one absmax per tensor") {
  std::vector<NamedTensor> ps = {{"w", param({64, 100}, 1)}};
  OptimConfig c = config8("adamw");
  c.blockwise = false;
  RuleOptimizer opt(ps, c);
  for (uint64_t t = 0; t < 5; ++t) {
    set_grads(ps, 10 + t);
    REQUIRE(opt.step());
  }
  const StateBuffer& m = opt.state(0)->buffers[0];
  CHECK(m.block_size() == 0);
  REQUIRE(m.absmax().numel() == 1);
  // The absmax is the largest |m|: the decoded state reaches it (exactly
  // for a positive maximum; the most negative dynamic code is -0.9921875).
  Tensor d = m.dequantize();
  float amax = 0;
  for (float v : d.to_vector<float>()) amax = std::max(amax, std::fabs(v));
  const float stored = m.absmax().to_vector<float>()[0];
  CHECK(amax <= stored);
  CHECK(amax >= 0.9921875f * stored);
  CHECK(amax > 0);
}

TEST_CASE("optim8: percentile clipping scales a gradient to the percentile") {
  std::vector<NamedTensor> ps = {{"w", param({4096}, 1)}};
  OptimConfig c;
  c.name = "sgd";
  c.momentum = 0;
  c.lr = 1.0;
  c.percentile_clipping = 5;
  RuleOptimizer opt(ps, c);
  // 10 steps with gradient norm 1, then one with norm 10: the 5th smallest
  // of the last 100 is 1, so the big gradient is scaled to norm 1.
  Tensor g = Tensor::full({4096}, 1.0 / 64.0, DType::f32, MemTag::grad);
  for (int t = 0; t < 10; ++t) {
    ps[0].second.set_grad(g.clone(MemTag::grad));
    REQUIRE(opt.step());
  }
  Tensor big = Tensor::full({4096}, 10.0 / 64.0, DType::f32, MemTag::grad);
  ps[0].second.set_grad(big);
  std::vector<float> before = ps[0].second.to_vector<float>();
  REQUIRE(opt.step());
  std::vector<float> after = ps[0].second.to_vector<float>();
  CHECK(before[0] - after[0] == doctest::Approx(1.0 / 64.0).epsilon(1e-4));
  CHECK(opt.state(0)->gnorm_ring.size() == size_t(kPercentileRing));
}

TEST_CASE("optim8: save and load reproduce raw states and continue exactly") {
  struct Run {
    const char* name;
    int bits;
    bool blockwise;
  };
  for (Run run :
       {Run{"adamw", 32, true}, Run{"adamw", 8, true}, Run{"adamw", 4, true},
        Run{"lamb", 8, true}, Run{"sgd", 8, false}, Run{"rmsprop", 8, true}}) {
    INFO(run.name, " bits ", run.bits, " blockwise ", run.blockwise);
    OptimConfig c;
    c.name = run.name;
    c.bits = run.bits;
    c.blockwise = run.blockwise;
    c.percentile_clipping = 50;
    auto make = [&] {
      return std::vector<NamedTensor>{{"w", param({64, 100}, 1)},
                                      {"b", param({33}, 2)},
                                      {"late", param({4096}, 3)}};
    };
    // Uninterrupted: 6 steps. "late" gets a gradient from step 3 on.
    std::vector<NamedTensor> pa = make();
    RuleOptimizer a(pa, c);
    std::string saved;
    for (uint64_t t = 0; t < 6; ++t) {
      set_grads(t < 2 ? std::vector<NamedTensor>{pa[0], pa[1]} : pa, 20 + t);
      if (t < 2) pa[2].second.zero_grad();
      REQUIRE(a.step());
      if (t == 0) {  // saved while "late" has no state yet
        std::ostringstream out;
        a.save_state(out);
        saved = out.str();
      }
    }
    // Resumed: the parameters after step 1, the state loaded, 5 steps.
    std::vector<NamedTensor> pb = make();
    RuleOptimizer b0(pb, c);
    set_grads({pb[0], pb[1]}, 20);
    REQUIRE(b0.step());  // the same first step gives the same parameters
    RuleOptimizer b(pb, c);
    std::istringstream in(saved);
    b.load_state(in);
    CHECK(raw_states(b, 3) == raw_states(b0, 3));
    CHECK(b.steps() == 1);
    for (uint64_t t = 1; t < 6; ++t) {
      set_grads(t < 2 ? std::vector<NamedTensor>{pb[0], pb[1]} : pb, 20 + t);
      if (t < 2) pb[2].second.zero_grad();
      REQUIRE(b.step());
    }
    for (size_t k = 0; k < 3; ++k) {
      CHECK(pa[k].second.to_vector<float>() == pb[k].second.to_vector<float>());
    }
    CHECK(raw_states(a, 3) == raw_states(b, 3));

    // A second round trip reproduces the stream byte for byte.
    std::ostringstream o1, o2;
    a.save_state(o1);
    RuleOptimizer c2(make(), c);
    std::istringstream i1(o1.str());
    c2.load_state(i1);
    c2.save_state(o2);
    CHECK(o1.str() == o2.str());
  }
}

TEST_CASE("optim8: load refuses truncated or mismatched state") {
  std::vector<NamedTensor> ps = {{"w", param({64, 100}, 1)}};
  RuleOptimizer a(ps, config8("adamw"));
  set_grads(ps, 2);
  REQUIRE(a.step());
  std::ostringstream out;
  a.save_state(out);
  const std::string s = out.str();

  RuleOptimizer b(ps, config8("adamw"));
  std::istringstream cut(s.substr(0, s.size() - 10));
  CHECK_THROWS_AS(b.load_state(cut), UserError);
  CHECK(b.state(0) == nullptr);  // nothing half-loaded
  CHECK(b.steps() == 0);

  OptimConfig c32 = config8("adamw");
  c32.bits = 32;
  RuleOptimizer d(ps, c32);
  std::istringstream whole(s);
  CHECK_THROWS_WITH_AS(
      d.load_state(whole),
      "[load_state] state 1 of 'w' does not fit the config: expected "
      "32-bit, 6400 elements, block_size 0, codebook ''; got 8-bit, 6400 "
      "elements, block_size 256, codebook 'dynamic'",
      UserError);

  RuleOptimizer e(ps, config8("lion"));
  std::istringstream other(s);
  CHECK_THROWS_WITH_AS(e.load_state(other),
                       "[load_state] expected state of optimizer 'lion', "
                       "got 'adamw'",
                       UserError);
  std::istringstream junk("not a state");
  CHECK_THROWS_AS(e.load_state(junk), UserError);
}
