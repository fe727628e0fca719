// kernels/cpu/quantize against kernels/ref/quantize: identical codes and
// absmax (bit for bit) for every codebook, block size, input type and odd
// length, nearest and stochastic.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/philox.h"
#include "kernels/cpu/quantize.h"
#include "kernels/ref/quantize.h"
#include "quant/codebook.h"

using namespace kbit;
using kbit::quant::Codebook;

namespace {

std::vector<std::string> codebook_names() {
  std::vector<std::string> names = {"fp4",      "nf4",    "fp8_e4m3",
                                    "fp8_e5m2", "e3m2",   "dynamic",
                                    "udynamic", "linear", "ulinear"};
  for (int k = 2; k <= 7; ++k) {
    for (const char* p : {"int", "dynamic", "udynamic", "ulinear_nz"})
      names.push_back(p + std::to_string(k));
  }
  return names;
}

// Normal data with a few exact zeros, huge and tiny values and a block of
// only zeros, so that every branch of the search is taken.
std::vector<float> test_data(int64_t n, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n));
  Philox rng(seed);
  rng.fill_normal(x.data(), n);
  for (int64_t i = 0; i < n; i += 37) x[size_t(i)] = 0.f;
  for (int64_t i = 5; i < n; i += 101) x[size_t(i)] *= 1e-6f;
  for (int64_t i = 0; i < std::min<int64_t>(n, 40); ++i) x[size_t(i)] = 0.f;
  return x;
}

template <typename T>
std::vector<T> convert(const std::vector<float>& x);
template <>
std::vector<float> convert(const std::vector<float>& x) {
  return x;
}
template <>
std::vector<bf16_t> convert(const std::vector<float>& x) {
  std::vector<bf16_t> out;
  for (float v : x) out.push_back(f32_to_bf16(v));
  return out;
}
template <>
std::vector<f16_t> convert(const std::vector<float>& x) {
  std::vector<f16_t> out;
  for (float v : x) out.push_back(f32_to_f16(v));
  return out;
}

struct Result {
  std::vector<float> absmax;
  std::vector<uint8_t> codes;
  std::vector<float> out;
};

template <typename T>
Result run(const Codebook& cb, const std::vector<T>& x, int64_t bs,
           const cpu::Stochastic* st, bool fast) {
  int64_t n = int64_t(x.size());
  int64_t eff = std::min(bs, std::max<int64_t>(n, 1));
  Result r;
  r.absmax.assign(size_t(cpu::num_blocks(n, eff)), -1.f);
  r.codes.assign(size_t(cpu::code_bytes(n, cb.packed())), 0xaa);
  r.out.assign(size_t(n), -7.f);
  const std::vector<float>& c = cb.codes();
  if (fast) {
    cpu::quantize_blockwise(cb.search(), x.data(), n, bs, r.absmax.data(),
                            r.codes.data(), st);
    cpu::dequantize_blockwise(cb.search(), r.codes.data(), r.absmax.data(), n,
                              eff, r.out.data());
  } else {
    ref::quantize_blockwise(c.data(), cb.size(), x.data(), n, bs,
                            r.absmax.data(), r.codes.data(), st);
    ref::dequantize_blockwise(c.data(), cb.size(), r.codes.data(),
                              r.absmax.data(), n, eff, r.out.data());
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

template <typename T>
void check_same(const Codebook& cb, const std::vector<float>& x32, int64_t bs,
                const cpu::Stochastic* st = nullptr) {
  std::vector<T> x = convert<T>(x32);
  Result f = run(cb, x, bs, st, true);
  Result r = run(cb, x, bs, st, false);
  CAPTURE(cb.name());
  CAPTURE(bs);
  CAPTURE(x.size());
  REQUIRE(same_bits(f.absmax, r.absmax));
  REQUIRE(f.codes == r.codes);
  REQUIRE(same_bits(f.out, r.out));
}

}  // namespace

TEST_CASE("quant: fast and reference quantize agree code for code") {
  const std::vector<int64_t> lengths = {1, 7, 33, 255, 1001, 4097 + 64};
  for (const std::string& name : codebook_names()) {
    Codebook cb = quant::make_codebook(name);
    for (int64_t n : lengths) {
      std::vector<float> x = test_data(n, uint64_t(n));
      for (int64_t bs : {32, 64, 256, 1024, 4096}) check_same<float>(cb, x, bs);
      check_same<float>(cb, x, int64_t(1) << 40);  // one whole-tensor block
    }
  }
}

TEST_CASE("quant: fast and reference agree on bf16 and f16 inputs") {
  for (const char* name : {"dynamic", "nf4", "fp4", "int8", "udynamic"}) {
    Codebook cb = quant::make_codebook(name);
    std::vector<float> x = test_data(3001, 5);
    for (int64_t bs : {32, 128, 2048}) {
      check_same<bf16_t>(cb, x, bs);
      check_same<f16_t>(cb, x, bs);
    }
  }
}

TEST_CASE("quant: fast and reference agree on parallel and huge blocks") {
  // Above the OpenMP threshold (2^15), and blocks larger than one task
  // (16384 values), odd-sized whole tensors included.
  for (const char* name : {"dynamic", "nf4", "ulinear_nz"}) {
    Codebook cb = quant::make_codebook(name);
    std::vector<float> x = test_data(70001, 9);
    for (int64_t bs : {int64_t(256), int64_t(32768), int64_t(1) << 40})
      check_same<float>(cb, x, bs);
  }
}

TEST_CASE("quant: stochastic rounding is identical on both paths") {
  for (const char* name : {"dynamic", "udynamic", "nf4", "int4", "fp8_e5m2"}) {
    Codebook cb = quant::make_codebook(name);
    for (int64_t n : {13, 1000, 40003}) {
      std::vector<float> x = test_data(n, 3);
      for (uint64_t offset : {0u, 1u, 6u}) {
        cpu::Stochastic st{1234, offset};
        for (int64_t bs : {int64_t(32), int64_t(256), int64_t(1) << 40})
          check_same<float>(cb, x, bs, &st);
      }
    }
  }
}

TEST_CASE("quant: per-block primitives match the scalar search") {
  Codebook cb = quant::make_codebook("dynamic");
  const cpu::CodeSearch& s = cb.search();
  std::vector<float> x = test_data(1000, 21);
  std::vector<uint8_t> codes(x.size());
  float absmax = cpu::block_absmax(x.data(), int64_t(x.size()));
  float want = 0.f;
  for (float v : x) want = std::max(want, std::fabs(v));
  CHECK(absmax == want);
  float inv = cpu::inverse_absmax(absmax);
  cpu::quantize_block(s, x.data(), int64_t(x.size()), inv, codes.data());
  for (size_t i = 0; i < x.size(); ++i)
    REQUIRE(codes[i] ==
            ref::nearest_code(cb.codes().data(), cb.size(), x[i] * inv));
  std::vector<float> out(x.size());
  cpu::dequantize_block(s, codes.data(), int64_t(x.size()), absmax, out.data());
  for (size_t i = 0; i < x.size(); ++i)
    REQUIRE(out[i] == cb.code(codes[i]) * absmax);
  CHECK(cpu::inverse_absmax(0.f) == 0.f);
  CHECK(cpu::inverse_absmax(1e-40f) == 0.f);  // subnormal blocks: zeros
}

TEST_CASE("quant: the multi-probe search (dense codebooks) is exact too") {
  // 200 codes packed into [0.5, 0.51] put several thresholds in one bucket,
  // so the one-gather table is off and the probe loop runs.
  std::vector<float> v = {-1.f, 0.f, 1.f};
  for (int i = 0; i < 200; ++i) v.push_back(0.5f + 0.01f * float(i) / 200.f);
  Codebook dense("dense", 8, v);
  CHECK(dense.search().nearest.probes > 1);
  CHECK(dense.search().nearest.fused == nullptr);
  CHECK(quant::make_codebook("dynamic").search().nearest.fused != nullptr);
  std::vector<float> x = test_data(5000, 17);
  for (size_t i = 0; i < x.size(); i += 3)
    x[i] = 0.5f + 0.0001f * float(i % 113);
  for (int64_t bs : {32, 256, 4096}) check_same<float>(dense, x, bs);
  cpu::Stochastic st{77, 3};
  check_same<float>(dense, x, 64, &st);
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    float mid =
        float((double(dense.code(int(i))) + dense.code(int(i) + 1)) / 2);
    for (float p : {mid, std::nextafter(mid, 2.f), std::nextafter(mid, -2.f)})
      REQUIRE(dense.nearest(p) ==
              ref::nearest_code(dense.codes().data(), dense.size(), p));
  }
}

TEST_CASE("quant: NaN and infinite inputs take the same codes on both paths") {
  // NaN is skipped by absmax and takes code 0; a block holding an infinity
  // has absmax inf, an inverse of 0 and every value normalizes to 0 or NaN.
  std::vector<float> x = test_data(300, 4);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[70] = -std::numeric_limits<float>::quiet_NaN();
  x[200] = std::numeric_limits<float>::infinity();
  for (const char* name : {"dynamic", "nf4", "udynamic"}) {
    Codebook cb = quant::make_codebook(name);
    std::vector<uint8_t> cf(x.size()), cr(x.size());
    std::vector<float> af(10), ar(10);
    cpu::quantize_blockwise(cb.search(), x.data(), int64_t(x.size()), 64,
                            af.data(), cf.data());
    ref::quantize_blockwise(cb.codes().data(), cb.size(), x.data(),
                            int64_t(x.size()), 64, ar.data(), cr.data());
    CHECK(cf == cr);
    CHECK(same_bits(af, ar));
    CHECK(std::isinf(af[3]));  // the block holding x[200]
  }
}
