// Codebook construction and the exact search tables of kernels/cpu.
//
// The dynamic maps follow the dynamic tree construction of bitsandbytes'
// create_dynamic_map (reference/bitsandbytes.md 1.1), with its float32
// rounding emulated step by step (one rounding per f32 operation).
#include "quant/codebook.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "kernels/ref/quantize.h"

namespace kbit::quant {

struct Codebook::Impl {
  std::string name;
  int bits = 0;
  std::vector<float> codes;   // (n) sorted, distinct
  std::vector<float> padded;  // (256) codes, then the last code repeated
  double raw_scale = 0.0;
  std::string raw_label;
  std::vector<float> mid_thresholds, floor_thresholds;
  std::vector<uint8_t> mid_buckets, floor_buckets;
  std::vector<uint32_t> mid_fused, floor_fused;
  cpu::CodeSearch search;
};

namespace {

// One f32 multiply or add. The volatile store keeps GCC (which may narrow
// the double ops to float and contract them) from fusing a multiply and an
// add into an FMA, which rounds once instead of twice.
float f32_mul(float a, float b) {
  volatile float p = a * b;
  return p;
}
float f32_add(float a, float b) {
  volatile float s = a + b;
  return s;
}

// The least float f that goes to the upper code (|f - hi| <= |f - lo|).
float midpoint_threshold(float lo, float hi) {
  auto up = [&](float f) {
    return ref::at_most(ref::exact_distance(f, hi), ref::exact_distance(f, lo));
  };
  const float inf = std::numeric_limits<float>::infinity();
  float f = float((double(lo) + double(hi)) / 2);
  while (!up(f)) f = std::nextafter(f, inf);
  while (up(std::nextafter(f, -inf))) f = std::nextafter(f, -inf);
  return f;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The smallest and largest non-NaN floats of bucket b; false if none.
bool bucket_range(uint32_t b, float& lo, float& hi) {
  uint32_t first = b << cpu::kBucketShift;
  uint32_t last = first | ((1u << cpu::kBucketShift) - 1);
  uint32_t sign = first & 0x80000000u;
  uint32_t inf = sign | 0x7f800000u;
  if (first > inf) return false;  // all NaN patterns
  last = std::min(last, inf);
  lo = bits_float(sign ? last : first);
  hi = bits_float(sign ? first : last);
  return true;
}

// The float of bucket b whose key (cpu::bucket_key) is k.
float keyed_float(uint32_t b, uint32_t k) {
  uint32_t first = b << cpu::kBucketShift;
  return bits_float(first | (first & 0x80000000u ? k ^ 0xffffu : k));
}

// The least key of bucket b whose float is >= t (0x10000 if none).
uint32_t least_key_at_or_above(uint32_t b, float t) {
  uint32_t lo = 0, hi = 0x10000;  // answer in [lo, hi]
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (keyed_float(b, mid) >= t) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// The one-gather table, when no bucket holds more than one threshold.
void build_fused(const std::vector<float>& thresholds,
                 const std::vector<uint8_t>& buckets,
                 std::vector<uint32_t>& fused) {
  fused.assign(cpu::kNumBuckets, 0);
  for (uint32_t b = 0; b < uint32_t(cpu::kNumBuckets); ++b) {
    float lo, hi;
    uint32_t key = 0x10000;
    if (bucket_range(b, lo, hi)) {
      auto it = std::upper_bound(thresholds.begin(), thresholds.end(), lo);
      if (it != thresholds.end() && *it <= hi)
        key = least_key_at_or_above(b, *it);
    }
    fused[b] = buckets[b] | key << 8;
  }
}

// Fills the bucket tables and padded thresholds of a SortedSearch.
void build_search(std::vector<float>& thresholds, std::vector<uint8_t>& buckets,
                  std::vector<uint32_t>& fused, cpu::SortedSearch& s) {
  int count = int(thresholds.size());
  buckets.assign(cpu::kNumBuckets + cpu::kBucketPad, 0);
  int probes = 0;
  for (uint32_t b = 0; b < uint32_t(cpu::kNumBuckets); ++b) {
    float lo, hi;
    if (!bucket_range(b, lo, hi)) continue;
    auto below = std::upper_bound(thresholds.begin(), thresholds.end(), lo);
    auto inside = std::upper_bound(below, thresholds.end(), hi);
    buckets[b] = uint8_t(below - thresholds.begin());
    probes = std::max(probes, int(inside - below));
  }
  if (probes <= 1) build_fused(thresholds, buckets, fused);
  // NaN padding: no value (not even +inf) is >= it.
  thresholds.resize(size_t(count + std::max(probes, 1)),
                    std::numeric_limits<float>::quiet_NaN());
  s = {thresholds.data(), buckets.data(),
       fused.empty() ? nullptr : fused.data(), count, probes};
}

bool parse_bits(const std::string& name, const std::string& prefix,
                int default_bits, int& bits) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  std::string rest = name.substr(prefix.size());
  if (rest.empty()) {
    bits = default_bits;
    return default_bits > 0;
  }
  if (rest.size() != 1 || rest[0] < '2' || rest[0] > '8') return false;
  bits = rest[0] - '0';
  return true;
}

bool parse_float_name(const std::string& name, int& e, int& m) {
  if (name == "fp8_e4m3") return e = 4, m = 3, true;
  if (name == "fp8_e5m2") return e = 5, m = 2, true;
  if (name.size() != 4 || name[0] != 'e' || name[2] != 'm') return false;
  if (!std::isdigit(name[1]) || !std::isdigit(name[3])) return false;
  e = name[1] - '0';
  m = name[3] - '0';
  return e >= 1 && 1 + e + m <= 8;
}

// Float32 linspace as torch computes it: the first half from start, the
// second half back from end.
std::vector<float> linspace_f32(float start, float end, int steps) {
  std::vector<float> out(static_cast<size_t>(steps));
  float step = (end - start) / float(steps - 1);
  for (int i = 0; i < steps; ++i) {
    out[i] = i < steps / 2 ? f32_add(start, f32_mul(step, float(i)))
                           : f32_add(end, -f32_mul(step, float(steps - i - 1)));
  }
  return out;
}

}  // namespace

Codebook::Codebook(std::string name, int bits, std::vector<float> values,
                   double raw_scale, std::string raw_label) {
  auto impl = std::make_shared<Impl>();
  std::sort(values.begin(), values.end());
  for (float& v : values) v = v == 0.f ? 0.f : v;  // -0 -> 0
  values.erase(std::unique(values.begin(), values.end()), values.end());
  KBIT_CHECK(bits >= 1 && bits <= 8, "[codebook ", name,
             "] expected bits in 1..8, got ", bits);
  KBIT_CHECK(values.size() >= 2 && values.size() <= (size_t(1) << bits),
             "[codebook ", name, "] expected 2..", 1 << bits,
             " distinct codes, got ", values.size());
  KBIT_CHECK(values.front() >= -1.f && values.back() <= 1.f, "[codebook ", name,
             "] expected codes in [-1, 1], got ", values.front(), "..",
             values.back());
  impl->name = std::move(name);
  impl->bits = bits;
  impl->codes = values;
  impl->raw_scale = raw_scale;
  impl->raw_label = std::move(raw_label);
  impl->padded.assign(kMaxCodes, values.back());
  std::copy(values.begin(), values.end(), impl->padded.begin());

  for (size_t i = 0; i + 1 < values.size(); ++i) {
    impl->mid_thresholds.push_back(
        midpoint_threshold(values[i], values[i + 1]));
    impl->floor_thresholds.push_back(values[i + 1]);
  }
  cpu::CodeSearch& s = impl->search;
  s.codes = impl->padded.data();
  s.n = int(values.size());
  s.packed = s.n <= 16;
  build_search(impl->mid_thresholds, impl->mid_buckets, impl->mid_fused,
               s.nearest);
  build_search(impl->floor_thresholds, impl->floor_buckets, impl->floor_fused,
               s.floor);
  impl_ = std::move(impl);
}

const std::string& Codebook::name() const {
  return impl().name;
}
int Codebook::bits() const {
  return impl().bits;
}
const std::vector<float>& Codebook::codes() const {
  return impl().codes;
}
double Codebook::raw_scale() const {
  return impl().raw_scale;
}
const std::string& Codebook::raw_label() const {
  return impl().raw_label;
}
const cpu::CodeSearch& Codebook::search() const {
  return impl().search;
}

const Codebook::Impl& Codebook::impl() const {
  KBIT_CHECK(impl_, "[codebook] used an undefined codebook");
  return *impl_;
}

Codebook make_int(int bits) {
  int m = (1 << (bits - 1)) - 1;
  std::vector<float> v;
  for (int i = -m; i <= m; ++i) v.push_back(float(i) / float(m));
  return Codebook("int" + std::to_string(bits), bits, v, m, "integer");
}

Codebook make_float(int e, int m) {
  int bias = (1 << (e - 1)) - 1;
  double top =
      (2.0 - std::ldexp(1.0, -m)) * std::ldexp(1.0, (1 << e) - 1 - bias);
  std::vector<float> v;
  for (int exp = 0; exp < (1 << e); ++exp) {
    for (int f = 0; f < (1 << m); ++f) {
      double frac = std::ldexp(double(f), -m);
      double x = exp == 0 ? frac * std::ldexp(1.0, 1 - bias)
                          : (1.0 + frac) * std::ldexp(1.0, exp - bias);
      v.push_back(float(x / top));
      v.push_back(float(-x / top));
    }
  }
  std::string name = str("e", e, "m", m);
  if (e == 4 && m == 3) name = "fp8_e4m3";
  if (e == 5 && m == 2) name = "fp8_e5m2";
  return Codebook(name, 1 + e + m, v, top, name + " value");
}

Codebook make_fp4() {
  std::vector<float> v;
  for (float raw : {0.f, 0.0625f, 2.f, 3.f, 4.f, 6.f, 8.f, 12.f}) {
    v.push_back(raw / 12.f);
    v.push_back(-raw / 12.f);
  }
  return Codebook("fp4", 4, v, 12.0, "fp4 value");
}

Codebook make_dynamic(bool is_signed, int bits) {
  // Decade i of E holds 2^(i + N - E) (signed) or twice as many (unsigned)
  // midpoints of an even grid on [0.1, 1], scaled by 10^(i - (E - 1)).
  int nonsign = bits - 1, e = bits - 1;
  std::vector<float> v;
  for (int i = 0; i < e; ++i) {
    int levels = 1 << (i + nonsign - e + (is_signed ? 0 : 1));
    std::vector<float> grid = linspace_f32(0.1f, 1.0f, levels + 1);
    float scale = float(std::pow(10.0, double(i - (e - 1))));
    for (int k = 0; k < levels; ++k) {
      float mean = f32_add(grid[k], grid[k + 1]) / 2.f;
      float x = f32_mul(scale, mean);
      v.push_back(x);
      if (is_signed) v.push_back(-x);
    }
  }
  v.push_back(0.f);
  v.push_back(1.f);
  std::string name = is_signed ? "dynamic" : "udynamic";
  return Codebook(bits == 8 ? name : name + std::to_string(bits), bits, v);
}

Codebook make_linear(bool is_signed, int bits) {
  int points = is_signed ? (1 << bits) - 1 : 1 << bits;
  std::vector<float> v;
  for (int i = 0; i < points; ++i) {
    double t = double(i) / double(points - 1);
    v.push_back(float(is_signed ? 2.0 * t - 1.0 : t));
  }
  std::string name = is_signed ? "linear" : "ulinear";
  return Codebook(bits == 8 ? name : name + std::to_string(bits), bits, v,
                  points - 1, "step");
}

Codebook make_linear_nonzero(int bits) {
  std::vector<float> v;
  for (int i = 1; i <= (1 << bits); ++i)
    v.push_back(float(double(i) / double(1 << bits)));
  return Codebook(
      bits == 4 ? "ulinear_nz" : "ulinear_nz" + std::to_string(bits), bits, v,
      1 << bits, "step");
}

double normal_quantile(double p) {
  KBIT_CHECK(p > 0 && p < 1, "[normal_quantile] expected p in (0, 1), got ", p);
  // Acklam's rational approximation (rel. error 1e-9), then two Halley
  // steps on erfc, which bring it to double precision.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  double x;
  if (p < 0.02425 || p > 1 - 0.02425) {
    double q = std::sqrt(-2 * std::log(p < 0.5 ? p : 1 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p > 0.5) x = -x;
  } else {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) *
        q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  for (int it = 0; it < 2; ++it) {
    double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
    double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
    x = x - u / (1 + x * u / 2);
  }
  return x;
}

Codebook make_nf4() {
  // 8 positive quantiles of a float32 grid from `offset` down to 0.5 (9
  // points, the last dropped) and 7 negative ones (8 points), plus 0; the
  // quantiles in double, rounded to f32 and divided by the largest in f32.
  const float offset = 0.9677083f;
  std::vector<float> pos = linspace_f32(offset, 0.5f, 9);
  std::vector<float> neg = linspace_f32(offset, 0.5f, 8);
  std::vector<float> v = {0.f};
  for (int k = 0; k < 8; ++k) v.push_back(float(normal_quantile(pos[k])));
  for (int k = 0; k < 7; ++k) v.push_back(float(-normal_quantile(neg[k])));
  float top = *std::max_element(v.begin(), v.end());
  for (float& x : v) x = x / top;
  return Codebook("nf4", 4, v, top, "N(0,1) quantile");
}

Codebook make_quantile(const float* sample, int64_t n, int bits) {
  int nq = (1 << bits) - 1;
  KBIT_USER_CHECK(n >= (int64_t(1) << bits), "[quantile", bits,
                  "] expected a sample of at least ", 1 << bits,
                  " values, got ", n);
  std::vector<double> s(sample, sample + n);
  double m = 0;
  for (double x : s) m = std::max(m, std::fabs(x));
  KBIT_USER_CHECK(m > 0 && std::isfinite(m), "[quantile", bits,
                  "] expected a finite sample that is not all zero");
  std::sort(s.begin(), s.end());
  double offset = 1.0 / double(1 << (bits + 1));
  std::vector<double> q;
  for (int k = 0; k < nq; ++k) {
    double p = offset + k * (1 - 2 * offset) / (nq - 1);
    double pos = p * double(n - 1);
    int64_t i = std::min<int64_t>(int64_t(pos), n - 2);
    double w = pos - double(i);
    q.push_back((s[i] * (1 - w) + s[i + 1] * w) / m);
  }
  double top = 0;
  for (double x : q) top = std::max(top, std::fabs(x));
  std::vector<float> v = {0.f};
  for (double x : q) v.push_back(float(x / top));
  std::string name = bits == 8 ? "quantile" : "quantile" + std::to_string(bits);
  return Codebook(name, bits, v);
}

bool is_codebook_name(const std::string& name) {
  int bits, e, m;
  return parse_bits(name, "int", 0, bits) || parse_float_name(name, e, m) ||
         name == "fp4" || name == "nf4" ||
         parse_bits(name, "dynamic", 8, bits) ||
         parse_bits(name, "udynamic", 8, bits) ||
         parse_bits(name, "ulinear_nz", 4, bits) ||
         parse_bits(name, "linear", 8, bits) ||
         parse_bits(name, "ulinear", 8, bits);
}

std::string codebook_choices() {
  return "int2..int8, fp4, fp8_e4m3, fp8_e5m2, e{E}m{M} (1+E+M <= 8, E >= "
         "1), dynamic, dynamic2..dynamic8, udynamic, udynamic2..udynamic8, "
         "linear, linear2..linear8, ulinear, ulinear2..ulinear8, ulinear_nz "
         "(4-bit), ulinear_nz2..ulinear_nz8, nf4, quantile, "
         "quantile2..quantile8";
}

Codebook make_codebook(const std::string& name) {
  int bits, e, m;
  if (name == "fp4") return make_fp4();
  if (name == "nf4") return make_nf4();
  if (parse_bits(name, "int", 0, bits)) return make_int(bits);
  if (parse_float_name(name, e, m)) return make_float(e, m);
  if (parse_bits(name, "dynamic", 8, bits)) return make_dynamic(true, bits);
  if (parse_bits(name, "udynamic", 8, bits)) return make_dynamic(false, bits);
  if (parse_bits(name, "ulinear_nz", 4, bits)) return make_linear_nonzero(bits);
  if (parse_bits(name, "linear", 8, bits)) return make_linear(true, bits);
  if (parse_bits(name, "ulinear", 8, bits)) return make_linear(false, bits);
  if (parse_bits(name, "quantile", 8, bits)) {
    throw UserError(str("[codebook] '", name,
                        "' is fitted to a sample: use make_quantile"));
  }
  throw UserError(str("[codebook] unknown data type '", name,
                      "'; expected one of ", codebook_choices()));
}

}  // namespace kbit::quant
