#include <doctest/doctest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/philox.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"

using namespace kbit;

TEST_CASE("tensor: views share storage and contiguous() copies") {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose_view(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK_FALSE(tt.is_contiguous());
  CHECK(tt.at({2, 1}) == 5);
  CHECK(tt.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor c = tt.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.storage() != t.storage());
  Tensor s = t.slice_view(1, 1, 3);
  CHECK(s.to_vector<float>() == std::vector<float>{1, 2, 4, 5});
  Tensor v = t.view({3, -1});
  CHECK(v.shape() == Shape{3, 2});
  CHECK(v.storage() == t.storage());
  CHECK_THROWS_WITH_AS(t.view({4, 2}),
                       "[view] cannot view (2, 3) (6 elements) as (4, 2)",
                       Error);
  CHECK_THROWS_AS(tt.view({6}), Error);
}

TEST_CASE("tensor: dtype conversions round trip") {
  Tensor t = Tensor::from_vector<float>({1.5f, -2.25f, 65504.f, 1e-7f}, {4});
  Tensor h = t.to(DType::f16);
  CHECK(h.dtype() == DType::f16);
  CHECK(
      h.to_vector<float>() ==
      std::vector<float>{1.5f, -2.25f, 65504.f, f16_to_f32(f32_to_f16(1e-7f))});
  // 1e-7 is an f16 subnormal (step 2^-24 ~ 5.96e-8): rounds to 2 steps.
  CHECK(f16_to_f32(f32_to_f16(1e-7f)) == std::ldexp(2.0f, -24));
  CHECK(std::isinf(f16_to_f32(f32_to_f16(70000.f))));
  Tensor b = t.to(DType::bf16);
  CHECK(b.at({0}) == 1.5);
  CHECK(bf16_to_f32(f32_to_bf16(1.00390625f)) == 1.0f);  // tie to even
  Tensor i = t.to(DType::i32);
  CHECK(i.to_vector<int32_t>() == std::vector<int32_t>{1, -2, 65504, 0});
}

TEST_CASE("tensor: f16 conversion agrees with an exhaustive decode") {
  // Every finite f16 value converts to f32 and back to itself.
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    f16_t h{uint16_t(bits)};
    float f = f16_to_f32(h);
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_f16(f).bits == h.bits);
  }
}

TEST_CASE("allocator: live and peak bytes per tag") {
  MemStats before = memory_stats(MemTag::optim_state);
  {
    Tensor t = Tensor::zeros({1000}, DType::f32, MemTag::optim_state);
    CHECK(memory_stats(MemTag::optim_state).live == before.live + 4000);
  }
  CHECK(memory_stats(MemTag::optim_state).live == before.live);
  CHECK(memory_stats(MemTag::optim_state).peak >= before.live + 4000);
}

TEST_CASE("philox: known answer and counter-based stream") {
  // Known-answer vector from the Random123 distribution (kat_vectors):
  // philox4x32_10, counter 0, key 0.
  PhiloxBlock r = philox4x32({0, 0, 0, 0}, {0, 0});
  CHECK(r[0] == 0x6627e8d5u);
  CHECK(r[1] == 0xe169c58du);
  CHECK(r[2] == 0xbc57ac4cu);
  CHECK(r[3] == 0x9b00dbd8u);
  Philox a(42), b(42);
  std::vector<uint32_t> seq;
  for (int i = 0; i < 10; ++i) seq.push_back(a.next_u32());
  for (int i = 9; i >= 0; --i) CHECK(b.word_at(uint64_t(i)) == seq[size_t(i)]);
  Philox c(42, 5);
  CHECK(c.next_u32() == seq[5]);
}

TEST_CASE("philox: normal draws have mean 0 and variance 1") {
  Philox rng(1);
  constexpr int kN = 200000;
  // 5 standard errors of the mean (1/sqrt(N) = 0.0022) and of the variance.
  constexpr double kTol = 5 * 0.0023;
  std::vector<float> v(kN);
  rng.fill_normal(v.data(), kN);
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= kN;
  for (float x : v) s += (x - m) * (x - m);
  s /= kN;
  CHECK(std::abs(m) < kTol);
  CHECK(std::abs(s - 1) < 2 * kTol);
}

TEST_CASE("dispatch: cuda is refused clearly without a CUDA build or GPU") {
  if (!cuda_built()) {
    CHECK_THROWS_WITH_AS(require_backend(Device::cuda, "matmul"),
                         "matmul: built without CUDA", Error);
    CHECK_THROWS_WITH_AS(cuda::fill(nullptr, 1, 0.f),
                         "fill: built without CUDA", Error);
    return;
  }
  if (cuda_device_count() == 0) {
    MESSAGE(
        "CUDA is built in but this machine has no GPU: checking the "
        "refusal only");
    CHECK_THROWS_AS(cuda::fill(nullptr, 1, 0.f), Error);
    return;
  }
  constexpr long long kN = 1000;
  float* d = static_cast<float*>(cuda::malloc_device(kN * sizeof(float)));
  cuda::fill(d, kN, 3.5f);
  std::vector<float> host(kN);
  cuda::copy(host.data(), d, kN * sizeof(float), false);
  cuda::free_device(d);
  for (float x : host) REQUIRE(x == 3.5f);
}

TEST_CASE("autograd engine: accumulation over two paths and into leaves") {
  // y = x * x built from a raw node to test the engine alone.
  Tensor x = Tensor::from_vector<double>({3.0}, {1});
  x.set_requires_grad(true);
  auto square = [](const Tensor& a) {
    Tensor out = Tensor::from_vector<double>({a.item() * a.item()}, {1});
    return record(out, "square", {a, a}, [a](const Tensor& g) {
      Tensor ga = Tensor::from_vector<double>({g.item() * a.item()}, {1});
      return std::vector<Tensor>{ga, ga};  // d/da of a*a, one per use
    });
  };
  Tensor y = square(x);
  CHECK(y.requires_grad());
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(6.0));
  backward(square(x));  // accumulates
  CHECK(x.grad().item() == doctest::Approx(12.0));
  {
    NoGradGuard guard;
    CHECK_FALSE(square(x).requires_grad());
  }
}
