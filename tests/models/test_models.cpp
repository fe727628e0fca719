// Module tree, Linear and MLP: names, shapes, modes, an f64 gradient check
// and a short training run.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "models/linear.h"
#include "models/mlp.h"
#include "optim/optimizer.h"
#include "support/gradcheck.h"

using namespace kbit;

namespace {

// A two-level tree to test Module itself: own parameter, then children.
struct Tree : Module {
  std::shared_ptr<Linear> a, b;
  explicit Tree(Philox& rng) {
    register_parameter("scale", Tensor::ones({1}));
    a = register_module("a", std::make_shared<Linear>(3, 2, true, rng));
    b = register_module("b", std::make_shared<Linear>(2, 1, false, rng));
  }
};

MLPConfig tiny_config(const char* activation, double dropout) {
  MLPConfig c;
  c.in_features = 3;
  c.hidden = {4, 5};
  c.out_features = 2;
  c.activation = activation;
  c.dropout = dropout;
  return c;
}

}  // namespace

TEST_CASE("models: Module names, count, tags, train mode and zero_grad") {
  Philox rng(1);
  Tree t(rng);
  std::vector<NamedTensor> np = t.named_parameters();
  REQUIRE(np.size() == 4);
  CHECK(np[0].first == "scale");
  CHECK(np[1].first == "a.weight");
  CHECK(np[2].first == "a.bias");
  CHECK(np[3].first == "b.weight");
  CHECK(t.parameter_count() == 1 + 6 + 2 + 2);
  for (auto& [name, p] : np) {
    CHECK_MESSAGE(p.tag() == MemTag::param, name);
    CHECK_MESSAGE(p.requires_grad(), name);
  }
  CHECK_FALSE(t.b->bias().defined());

  t.train(false);
  CHECK_FALSE(t.training());
  CHECK_FALSE(t.a->training());
  t.train();
  CHECK(t.b->training());

  for (auto& np1 : np) np1.second.set_grad(Tensor::ones(np1.second.shape()));
  t.zero_grad();
  for (auto& np1 : np) CHECK_FALSE(np1.second.grad().defined());
}

TEST_CASE("models: MLP 784-[32,16]-10 parameters and forward shape") {
  Philox rng(2);
  MLPConfig c;
  c.hidden = {32, 16};
  MLP mlp(c, rng);
  std::vector<NamedTensor> np = mlp.named_parameters();
  std::vector<std::pair<std::string, Shape>> expect = {
      {"fc0.weight", {32, 784}}, {"fc0.bias", {32}},
      {"fc1.weight", {16, 32}},  {"fc1.bias", {16}},
      {"fc2.weight", {10, 16}},  {"fc2.bias", {10}}};
  REQUIRE(np.size() == expect.size());
  for (size_t i = 0; i < np.size(); ++i) {
    CHECK(np[i].first == expect[i].first);
    CHECK(np[i].second.shape() == expect[i].second);
  }
  CHECK(mlp.parameter_count() == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10);

  // Init: U(-1/sqrt(in), 1/sqrt(in)).
  for (float w : mlp.named_parameters()[0].second.to_vector<float>()) {
    REQUIRE(std::abs(w) <= 1.0f / 28.0f);
  }

  Tensor x = Tensor::rand({5, 784}, rng);
  Tensor y = mlp.forward(x, rng);
  CHECK(y.shape() == Shape{5, 10});
  CHECK_THROWS_AS(mlp.forward(Tensor::zeros({5, 783}), rng), Error);

  MLPConfig bad = c;
  bad.activation = "tanh";
  CHECK_THROWS_WITH_AS(MLP(bad, rng),
                       "[mlp] expected activation relu or gelu, got 'tanh'",
                       UserError);
  bad = c;
  bad.dropout = 1.0;
  CHECK_THROWS_AS(MLP(bad, rng), UserError);
  bad = c;
  bad.hidden = {32, 0};
  CHECK_THROWS_AS(MLP(bad, rng), UserError);
}

TEST_CASE("models: MLP gradients match finite differences in f64") {
  for (const char* act : {"relu", "gelu"}) {
    for (double p : {0.0, 0.3}) {
      Philox rng(3);
      MLP mlp(tiny_config(act, p), rng, DType::f64);
      std::vector<Tensor> inputs = {test::leaf({6, 3}, 11)};
      for (const Tensor& t : mlp.parameters()) inputs.push_back(t);
      // A fresh generator per call: every evaluation draws the same
      // dropout mask, so the function is smooth in the inputs.
      auto f = [&](const std::vector<Tensor>& in) {
        Philox mask_rng(99);
        return mlp.forward(in[0], mask_rng);
      };
      test::check_gradients(f, inputs, std::string("mlp ") + act);
    }
  }
}

TEST_CASE("models: dropout is on in training mode and off in eval mode") {
  Philox rng(4);
  MLP mlp(tiny_config("relu", 0.5), rng);
  Tensor x = Tensor::rand({8, 3}, rng);
  mlp.train(false);
  Philox r1(5), r2(6);
  CHECK(mlp.forward(x, r1).to_vector<float>() ==
        mlp.forward(x, r2).to_vector<float>());
  mlp.train(true);
  Philox r3(5), r4(6);
  CHECK(mlp.forward(x, r3).to_vector<float>() !=
        mlp.forward(x, r4).to_vector<float>());
}

TEST_CASE("models: 50 AdamW steps fit a small synthetic problem") {
  // 3 Gaussian blobs in 8 dimensions, 32 points each.
  constexpr int64_t kClasses = 3, kPerClass = 32, kDim = 8;
  Philox rng(7);
  Tensor centers = Tensor::randn({kClasses, kDim}, rng, DType::f32, 0, 2);
  Tensor x = Tensor::randn({kClasses * kPerClass, kDim}, rng);
  std::vector<int32_t> y;
  float* xp = x.data<float>();
  const float* cp = centers.data<float>();
  for (int64_t i = 0; i < kClasses * kPerClass; ++i) {
    int64_t c = i % kClasses;
    y.push_back(int32_t(c));
    for (int64_t d = 0; d < kDim; ++d) xp[i * kDim + d] += cp[c * kDim + d];
  }
  Tensor targets = Tensor::from_vector(y, {int64_t(y.size())});

  MLPConfig mc;
  mc.in_features = kDim;
  mc.hidden = {16};
  mc.out_features = kClasses;
  MLP mlp(mc, rng);
  OptimConfig oc;
  oc.lr = 0.02;
  auto opt = make_optimizer(mlp.named_parameters(), oc);

  double first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    opt->zero_grad();
    Tensor loss = cross_entropy(mlp.forward(x, rng), targets);
    backward(loss);
    REQUIRE(opt->step());
    (step == 0 ? first : last) = loss.item();
  }
  // A separable problem: the loss falls from about log(3) ~ 1.1 to well
  // under a tenth of it; a broken update or gradient leaves it near 1.
  CHECK(first > 0.5);
  CHECK(last < 0.1 * first);
}
