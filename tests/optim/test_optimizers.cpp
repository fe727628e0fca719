// Optimizers (optim/) against hand-written double-precision formulas, the
// non-finite-gradient policy, clipping, state accounting and the factory.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "optim/sgd.h"

using namespace kbit;

namespace {

// f32 parameters updated a few times against a double formula: each step
// rounds p, m, v to f32 (relative 2^-24 each); 1e-5 relative bounds a few
// steps with margin, far below the size of any formula mistake (~lr).
constexpr double kF32Rtol = 1e-5;
constexpr double kF32Atol = 1e-6;
constexpr int kSteps = 5;

Tensor param(const std::vector<float>& values) {
  Tensor p =
      Tensor::from_vector(values, {int64_t(values.size())}, MemTag::param);
  p.set_requires_grad(true);
  return p;
}

// Deterministic gradient for step t, element i (mixed signs and sizes).
double grad_at(int t, size_t i) {
  return std::sin(1.3 * double(t) + 0.7 * double(i)) * (0.5 + 0.1 * i);
}

void set_grads(const std::vector<Tensor>& ps, int t) {
  size_t offset = 0;
  for (const Tensor& p : ps) {
    std::vector<float> g(size_t(p.numel()));
    for (size_t i = 0; i < g.size(); ++i) g[i] = float(grad_at(t, offset + i));
    offset += g.size();
    p.set_grad(Tensor::from_vector(g, p.shape(), MemTag::grad));
  }
}

void check_params(const std::vector<Tensor>& ps,
                  const std::vector<double>& expect, const char* what) {
  size_t offset = 0;
  for (const Tensor& p : ps) {
    for (float x : p.to_vector<float>()) {
      double e = expect[offset++];
      CHECK_MESSAGE(std::abs(x - e) <= kF32Atol + kF32Rtol * std::abs(e), what,
                    " element ", offset - 1, ": got ", x, " expected ", e);
    }
  }
}

const std::vector<float> kInit = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f, 1.0f};

std::vector<NamedTensor> two_params(std::vector<Tensor>& ps) {
  ps = {param({kInit.begin(), kInit.begin() + 4}),
        param({kInit.begin() + 4, kInit.end()})};
  return {{"a", ps[0]}, {"b", ps[1]}};
}

// Adam(W) in double, written out from the papers' formulas.
std::vector<double> adam_expected(const OptimConfig& c, bool decoupled,
                                  int steps) {
  std::vector<double> p(kInit.begin(), kInit.end()), m(p.size()), v(p.size());
  for (int t = 1; t <= steps; ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad_at(t, i) + (decoupled ? 0.0 : c.weight_decay * p[i]);
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
      double m_hat = m[i] / (1 - std::pow(c.beta1, t));
      double v_hat = v[i] / (1 - std::pow(c.beta2, t));
      if (decoupled) p[i] -= c.lr * c.weight_decay * p[i];
      p[i] -= c.lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
  }
  return p;
}

std::vector<double> sgd_expected(const OptimConfig& c, int steps) {
  std::vector<double> p(kInit.begin(), kInit.end()), b(p.size());
  for (int t = 1; t <= steps; ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad_at(t, i) + c.weight_decay * p[i];
      b[i] = c.momentum * b[i] + g;
      double d = c.nesterov ? g + c.momentum * b[i] : b[i];
      if (c.momentum == 0) d = g;
      p[i] -= c.lr * d;
    }
  }
  return p;
}

void run_steps(Optimizer& opt, const std::vector<Tensor>& ps, int steps) {
  for (int t = 1; t <= steps; ++t) {
    set_grads(ps, t);
    REQUIRE(opt.step());
  }
}

}  // namespace

TEST_CASE("optim: AdamW and Adam follow the double-precision formula") {
  for (const char* name : {"adamw", "adam"}) {
    OptimConfig c;
    c.name = name;
    c.lr = 0.05;
    c.beta1 = 0.8;
    c.beta2 = 0.95;
    c.eps = 1e-6;
    c.weight_decay = 0.1;
    std::vector<Tensor> ps;
    auto opt = make_optimizer(two_params(ps), c);
    run_steps(*opt, ps, kSteps);
    CHECK(opt->steps() == kSteps);
    check_params(ps, adam_expected(c, c.name == "adamw", kSteps), name);
  }
}

TEST_CASE("optim: SGD (plain, momentum, Nesterov) follows the formula") {
  struct Case {
    double momentum;
    bool nesterov;
    const char* what;
  };
  for (Case k : {Case{0.0, false, "plain"}, Case{0.9, false, "momentum"},
                 Case{0.9, true, "nesterov"}}) {
    OptimConfig c;
    c.name = "sgd";
    c.lr = 0.1;
    c.momentum = k.momentum;
    c.nesterov = k.nesterov;
    c.weight_decay = 0.01;
    std::vector<Tensor> ps;
    auto opt = make_optimizer(two_params(ps), c);
    run_steps(*opt, ps, kSteps);
    check_params(ps, sgd_expected(c, kSteps), k.what);
  }
}

TEST_CASE("optim: a non-finite gradient skips the step and changes nothing") {
  OptimConfig c;
  c.name = "adamw";
  c.lr = 0.05;
  std::vector<Tensor> ps;
  auto opt = make_optimizer(two_params(ps), c);

  // Before any state exists: nothing is created.
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    set_grads(ps, 1);
    ps[1].grad().data<float>()[1] = bad;
    CHECK_FALSE(opt->step());
    CHECK(opt->state_bytes() == 0);
  }
  CHECK(opt->skipped_steps() == 3);
  CHECK(opt->steps() == 0);
  check_params(ps, {kInit.begin(), kInit.end()}, "after skipped steps");

  // Between good steps: the result equals two good steps in a row, so
  // neither the parameters nor m, v nor the step count moved.
  set_grads(ps, 1);
  REQUIRE(opt->step());
  std::vector<float> before = ps[0].to_vector<float>();
  set_grads(ps, 2);
  ps[0].grad().data<float>()[0] = NAN;
  CHECK_FALSE(opt->step());
  CHECK(ps[0].to_vector<float>() == before);
  set_grads(ps, 2);
  REQUIRE(opt->step());
  CHECK(opt->skipped_steps() == 4);
  CHECK(opt->steps() == 2);
  check_params(ps, adam_expected(c, true, 2), "good, bad, good");
}

TEST_CASE("optim: global-norm clipping scales the gradients to the norm") {
  OptimConfig c;
  c.name = "sgd";
  c.lr = 1.0;
  c.momentum = 0.0;
  c.clip_grad_norm = 1.3;
  std::vector<Tensor> ps = {param({0, 0}), param({0})};
  SGD opt({{"a", ps[0]}, {"b", ps[1]}}, c);
  ps[0].set_grad(Tensor::from_vector<float>({3, 4}, {2}, MemTag::grad));
  ps[1].set_grad(Tensor::from_vector<float>({12}, {1}, MemTag::grad));
  REQUIRE(opt.step());
  CHECK(opt.last_grad_norm() == doctest::Approx(13.0));
  // Scaled by 1.3 / 13 = 0.1: grads (0.3, 0.4), (1.2); p = -grad.
  CHECK(global_grad_norm({ps[0].grad(), ps[1].grad()}) == doctest::Approx(1.3));
  CHECK(ps[0].to_vector<float>()[0] == doctest::Approx(-0.3));
  CHECK(ps[0].to_vector<float>()[1] == doctest::Approx(-0.4));
  CHECK(ps[1].to_vector<float>()[0] == doctest::Approx(-1.2));

  // Below the threshold the gradients stay as they are.
  ps[1].set_grad(Tensor::from_vector<float>({0.5f}, {1}, MemTag::grad));
  ps[0].zero_grad();
  REQUIRE(opt.step());
  CHECK(ps[1].grad().to_vector<float>()[0] == 0.5f);
  CHECK(ps[1].to_vector<float>()[0] == doctest::Approx(-1.7));
}

TEST_CASE("optim: state_bytes counts the real optim_state allocations") {
  int64_t live0 = memory_stats(MemTag::optim_state).live;
  std::vector<Tensor> ps = {param(std::vector<float>(1000, 1.f)),
                            param(std::vector<float>(37, 1.f))};
  std::vector<NamedTensor> named = {{"w", ps[0]}, {"b", ps[1]}};
  {
    OptimConfig c;
    auto opt = make_optimizer(named, c);  // adamw
    CHECK(opt->state_bytes() == 0);       // states come on the first step
    set_grads(ps, 1);
    REQUIRE(opt->step());
    int64_t live = memory_stats(MemTag::optim_state).live - live0;
    CHECK(opt->state_bytes() == 8 * 1037);  // 2 f32 states per param
    CHECK(live == opt->state_bytes());
  }
  CHECK(memory_stats(MemTag::optim_state).live == live0);
  OptimConfig c;
  c.name = "sgd";
  auto sgd = make_optimizer(named, c);
  REQUIRE(sgd->step());
  CHECK(sgd->state_bytes() == 4 * 1037);  // one momentum buffer
  c.momentum = 0.0;
  auto plain = make_optimizer(named, c);
  REQUIRE(plain->step());
  CHECK(plain->state_bytes() == 0);
}

TEST_CASE("optim: make_optimizer rejects unknown names and settings") {
  std::vector<Tensor> ps;
  OptimConfig c;
  c.name = "adamm";
  CHECK_THROWS_WITH_AS(make_optimizer(two_params(ps), c),
                       "optim.name: expected one of sgd, adam, adamw, "
                       "rmsprop, adagrad, lion, lamb, lars, got 'adamm'",
                       UserError);
  c.name = "adamw";
  c.bits = 7;
  CHECK_THROWS_WITH_AS(make_optimizer(two_params(ps), c),
                       "optim.bits: expected one of 32, 8, 4, got 7",
                       UserError);
  c.bits = 32;
  c.beta2 = 1.0;
  CHECK_THROWS_WITH_AS(make_optimizer(two_params(ps), c),
                       "optim.beta2: expected a value in [0, 1), got 1",
                       UserError);
  c.beta2 = 0.999;
  c.name = "sgd";
  c.momentum = 0.0;
  c.nesterov = true;
  CHECK_THROWS_AS(make_optimizer(two_params(ps), c), UserError);
}
