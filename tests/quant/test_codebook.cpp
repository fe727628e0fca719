// Codebooks: the values of every named type, against the bitsandbytes
// tables (fixtures in tests/quant/data) and the definitions in
// quant/codebook.h; exactness of the search tables.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/philox.h"
#include "kernels/ref/quantize.h"
#include "quant/codebook.h"

using namespace kbit;
using namespace kbit::quant;

namespace {

// The reference tables are f32 values printed to 8 digits and may differ
// from torch's linspace by 1 ulp (reference/bitsandbytes.md 1.8).
constexpr int64_t kTableUlps = 1;

std::vector<float> read_fixture(const std::string& name) {
  std::ifstream in(std::string(KBIT_SOURCE_DIR) + "/tests/quant/data/" + name);
  REQUIRE_MESSAGE(in, "missing fixture ", name);
  std::vector<float> v;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    v.push_back(std::stof(line));
  }
  return v;
}

// Distance in units in the last place between two finite floats.
int64_t ulps(float a, float b) {
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? int64_t(int32_t(0x80000000u) - i) : int64_t(i);
  };
  return std::llabs(key(a) - key(b));
}

std::vector<std::string> all_names() {
  std::vector<std::string> names = {
      "fp4",  "nf4",     "fp8_e4m3", "fp8_e5m2", "e2m1",    "e3m2",
      "e1m2", "dynamic", "udynamic", "linear",   "ulinear", "ulinear_nz"};
  for (int k = 2; k <= 8; ++k) {
    for (const char* p :
         {"int", "dynamic", "udynamic", "linear", "ulinear", "ulinear_nz"})
      names.push_back(p + std::to_string(k));
  }
  return names;
}

}  // namespace

TEST_CASE("quant: dynamic and udynamic equal the bitsandbytes tables") {
  for (std::string name : {"dynamic", "udynamic"}) {
    CAPTURE(name);
    std::vector<float> want = read_fixture(name + ".txt");
    Codebook cb = make_codebook(name);
    REQUIRE(want.size() == 256);
    REQUIRE(cb.size() == 256);
    for (int i = 0; i < 256; ++i) {
      CAPTURE(i);
      CHECK(ulps(cb.code(i), want[size_t(i)]) <= kTableUlps);
    }
  }
  Codebook d = make_codebook("dynamic");
  CHECK(d.code(127) == 0.f);
  CHECK(d.code(255) == 1.f);
  CHECK(d.is_signed());
  CHECK_FALSE(make_codebook("udynamic").is_signed());
  CHECK(make_codebook("udynamic").code(0) == 0.f);
}

TEST_CASE("quant: fp4, nf4 and int4 hold the documented values") {
  Codebook fp4 = make_codebook("fp4");
  std::vector<float> want;
  for (float raw : {12.f, 8.f, 6.f, 4.f, 3.f, 2.f, 0.0625f})
    want.push_back(-raw / 12.f);
  for (float raw : {0.f, 0.0625f, 2.f, 3.f, 4.f, 6.f, 8.f, 12.f})
    want.push_back(raw / 12.f);
  CHECK(fp4.codes() == want);
  CHECK(fp4.raw_scale() == 12.0);
  CHECK(fp4.bits() == 4);

  Codebook int4 = make_codebook("int4");
  REQUIRE(int4.size() == 15);
  for (int i = 0; i < 15; ++i) CHECK(int4.code(i) == float(i - 7) / 7.f);
  CHECK(int4.raw_scale() == 7.0);

  std::vector<float> nf4 = read_fixture("nf4.txt");
  Codebook cb = make_codebook("nf4");
  REQUIRE(cb.size() == 16);
  for (int i = 0; i < 16; ++i) {
    CAPTURE(i);
    CHECK(cb.code(i) == nf4[size_t(i)]);
  }
}

TEST_CASE("quant: k-bit dynamic, float and linear types") {
  // The 4-bit signed dynamic map torchao uses for first moments
  // (reference/bitsandbytes.md 1.7).
  std::vector<float> d4 = make_codebook("dynamic4").codes();
  std::vector<double> want = {0.0055, 0.0325, 0.0775, 0.2125,
                              0.4375, 0.6625, 0.8875};
  REQUIRE(d4.size() == 16);
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(d4[8 + i] == doctest::Approx(want[i]).epsilon(1e-6));
    CHECK(d4[6 - i] == doctest::Approx(-want[i]).epsilon(1e-6));
  }
  CHECK(d4[7] == 0.f);
  CHECK(d4[15] == 1.f);

  // e4m3 without NaN codes: 255 distinct values, max 480 = 1.875 * 2^8,
  // smallest subnormal 2^-9.
  Codebook e4m3 = make_codebook("fp8_e4m3");
  CHECK(e4m3.size() == 255);
  CHECK(e4m3.raw_scale() == 480.0);
  CHECK(e4m3.code(128) == float(std::ldexp(1.0, -9) / 480.0));
  Codebook e5m2 = make_codebook("fp8_e5m2");
  CHECK(e5m2.size() == 255);
  CHECK(e5m2.raw_scale() == 114688.0);
  // IEEE-like e2m1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 (over 6).
  std::vector<float> e2m1 = make_codebook("e2m1").codes();
  REQUIRE(e2m1.size() == 15);
  CHECK(e2m1[8] == float(0.5 / 6.0));
  CHECK(e2m1[14] == 1.f);

  CHECK(make_codebook("ulinear").size() == 256);
  CHECK(make_codebook("ulinear").code(1) == float(1.0 / 255));
  CHECK(make_codebook("linear").size() == 255);
  Codebook nz = make_codebook("ulinear_nz");
  CHECK(nz.size() == 16);
  CHECK(nz.code(0) == 1.f / 16);  // no zero code
  CHECK(nz.code(15) == 1.f);
  CHECK_FALSE(nz.is_signed());
}

TEST_CASE("quant: every codebook knows its name, bits and signedness") {
  for (const std::string& name : all_names()) {
    CAPTURE(name);
    Codebook cb = make_codebook(name);
    CHECK(is_codebook_name(name));
    CHECK(cb.size() <= (1 << cb.bits()));
    CHECK(cb.size() >= (1 << cb.bits()) - 2);  // +-0 and int's missing -2^k
    CHECK(cb.packed() == (cb.bits() <= 4));
    CHECK(cb.codes().back() == 1.f);
    bool is_unsigned = name[0] == 'u';
    CHECK(cb.is_signed() == !is_unsigned);
    for (int i = 1; i < cb.size(); ++i) CHECK(cb.code(i - 1) < cb.code(i));
  }
  CHECK(make_codebook("dynamic").name() == "dynamic");
  CHECK(make_codebook("dynamic8").name() == "dynamic");
  CHECK(make_codebook("int3").name() == "int3");
  CHECK(make_codebook("int3").bits() == 3);
  CHECK(make_codebook("e3m4").bits() == 8);
}

TEST_CASE("quant: unknown codebook names list the valid choices") {
  for (const char* bad :
       {"int9", "int1", "fp16", "e9m1", "e4m4", "dyn", "nf3", "", "quantile"}) {
    CAPTURE(bad);
    CHECK_FALSE(is_codebook_name(bad));
    CHECK_THROWS_AS(make_codebook(bad), UserError);
  }
  CHECK_THROWS_WITH(make_codebook("int9"),
                    doctest::Contains("expected one of int2..int8, fp4"));
}

TEST_CASE("quant: nearest code is exact at every threshold") {
  // Each midpoint and its float neighbours, plus random values, against the
  // reference argmin (ties go to the upper code).
  Philox rng(11);
  for (const std::string& name : all_names()) {
    CAPTURE(name);
    Codebook cb = make_codebook(name);
    const std::vector<float>& c = cb.codes();
    std::vector<float> probes = {0.f,
                                 -0.f,
                                 1.f,
                                 -1.f,
                                 2.f,
                                 -2.f,
                                 1e-30f,
                                 -1e-30f,
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity()};
    for (size_t i = 0; i + 1 < c.size(); ++i) {
      float mid = float((double(c[i]) + double(c[i + 1])) / 2);
      probes.push_back(mid);
      probes.push_back(std::nextafter(mid, 2.f));
      probes.push_back(std::nextafter(mid, -2.f));
      probes.push_back(c[i]);
    }
    for (int k = 0; k < 2000; ++k)
      probes.push_back(2.2f * rng.next_uniform() - 1.1f);
    for (float v : probes) {
      CAPTURE(v);
      REQUIRE(cb.nearest(v) == ref::nearest_code(c.data(), cb.size(), v));
    }
    CHECK(cb.nearest(std::numeric_limits<float>::quiet_NaN()) == 0);
  }
  // An exact midpoint goes up: int4 codes 0 and 1/7, midpoint 1/14.
  Codebook int2 = make_codebook("int2");  // -1, 0, 1
  CHECK(int2.nearest(0.5f) == 2);
  CHECK(int2.nearest(-0.5f) == 1);
  CHECK(int2.nearest(std::nextafter(0.5f, 0.f)) == 1);
}

TEST_CASE("quant: quantile codebooks fit their sample") {
  std::vector<float> x(1 << 14);
  Philox rng(3);
  rng.fill_normal(x.data(), int64_t(x.size()));
  Codebook q = make_quantile(x.data(), int64_t(x.size()), 4);
  CHECK(q.name() == "quantile4");
  CHECK(q.size() == 16);  // 15 quantiles and 0
  CHECK(q.is_signed());
  // Symmetric data: the codes come in near +- pairs around 0.
  CHECK(q.code(0) == doctest::Approx(-1.0).epsilon(0.05));
  // The median code of the 15 quantiles is near 0, the middle code 0.
  int zero = q.nearest(0.f);
  CHECK(q.code(zero) == 0.f);
  std::vector<float> tiny = {1.f, 2.f};
  CHECK_THROWS_AS(make_quantile(tiny.data(), 2, 4), UserError);
}

TEST_CASE("quant: normal_quantile inverts the normal CDF") {
  for (double p : {1e-10, 1e-3, 0.02, 0.3, 0.5, 0.75, 0.9677083, 0.999}) {
    double x = normal_quantile(p);
    CHECK(0.5 * std::erfc(-x / std::sqrt(2.0)) ==
          doctest::Approx(p).epsilon(1e-13));
  }
  CHECK(normal_quantile(0.5) == 0.0);
}
