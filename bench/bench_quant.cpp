// bench_quant: blockwise quantize / dequantize throughput against this
// machine's memory bandwidth, measured in the same run.
//
//   build/bench_quant [--n LOG2] [--reps R]     (default 2^26 values, 7 reps)
//
// Times are medians of R runs. GB/s counts the f32 side only (4 bytes per
// value: read by quantize, written by dequantize). The bandwidth is a
// STREAM-like triad a = b + s * c over three f32 arrays of n values,
// counted as 12 bytes per value. The reference loops (kernels/ref/quantize.h,
// one thread): dequantize on all n values, quantize (argmin over the whole
// codebook, slow) on a slice of n / 64 values.
// Targets: dequantize >= 0.6 of the triad, quantize >= 0.3, both >= 5x the
// reference. Cost: about 3 GB of memory and 20-40 s on 2 cores.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/philox.h"
#include "kernels/cpu/quantize.h"
#include "kernels/ref/quantize.h"
#include "quant/codebook.h"

using namespace kbit;

namespace {

constexpr int64_t kBlock = 256;
constexpr double kDequantTarget = 0.6;  // fraction of the triad
constexpr double kQuantTarget = 0.3;
constexpr double kRefSpeedup = 5.0;
constexpr int64_t kRefSlice = 64;  // the reference runs on n / 64 values

double median_seconds(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  f();  // warm up: page faults, caches
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Fresh array touched in parallel (first touch places pages).
std::vector<float> parallel_array(int64_t n, float value) {
  std::vector<float> v(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) v[i] = value;
  return v;
}

double triad_gbs(int64_t n, int reps) {
  std::vector<float> a = parallel_array(n, 0.f), b = parallel_array(n, 1.f),
                     c = parallel_array(n, 2.f);
  const float s = 3.f;
  double t = median_seconds(reps, [&] {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  });
  return 12.0 * double(n) / t / 1e9;
}

struct Row {
  std::string what;
  double gbs;
};

bool report(const char* what, double value, double target, const char* unit) {
  bool ok = value >= target;
  std::printf("%-44s %8.2f %-10s target >= %5.2f  %s\n", what, value, unit,
              target, ok ? "PASS" : "FAIL");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  int log2n = 26, reps = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--n") log2n = std::atoi(argv[i + 1]);
    if (k == "--reps") reps = std::atoi(argv[i + 1]);
  }
  if (log2n < 16 || log2n > 30 || reps < 1) {
    std::fprintf(stderr, "bench_quant: expected --n 16..30 and --reps >= 1\n");
    return 2;
  }
  int64_t n = int64_t(1) << log2n;
  std::printf("command:");
  for (int i = 0; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\nn = 2^%d f32 values, block %lld, %d threads, median of %d\n",
              log2n, (long long)kBlock, omp_get_max_threads(), reps);
  double load[1] = {0};
  if (getloadavg(load, 1) == 1)
    std::printf(
        "load average at start: %.2f (other processes slow this "
        "down; rerun when it is high)\n",
        load[0]);

  double triad = triad_gbs(n, reps);
  std::printf("triad bandwidth (a = b + s*c, 12 B/value): %.2f GB/s\n\n",
              triad);

  std::vector<float> x = parallel_array(n, 0.f);
  Philox rng(1);
  rng.fill_normal(x.data(), n);
  std::vector<float> out = parallel_array(n, 0.f);
  std::vector<float> absmax(size_t(cpu::num_blocks(n, kBlock)));
  bool ok = true;
  for (const char* name : {"dynamic", "nf4"}) {
    quant::Codebook cb = quant::make_codebook(name);
    const cpu::CodeSearch& s = cb.search();
    std::vector<uint8_t> codes(size_t(cpu::code_bytes(n, cb.packed())));
    double tq = median_seconds(reps, [&] {
      cpu::quantize_blockwise(s, x.data(), n, kBlock, absmax.data(),
                              codes.data());
    });
    double td = median_seconds(reps, [&] {
      cpu::dequantize_blockwise(s, codes.data(), absmax.data(), n, kBlock,
                                out.data());
    });
    int64_t m = n / kRefSlice;
    const std::vector<float>& c = cb.codes();
    double rq = median_seconds(1, [&] {
      ref::quantize_blockwise(c.data(), cb.size(), x.data(), m, kBlock,
                              absmax.data(), codes.data());
    });
    double rd = median_seconds(1, [&] {
      ref::dequantize_blockwise(c.data(), cb.size(), codes.data(),
                                absmax.data(), n, kBlock, out.data());
    });
    double q_gbs = 4.0 * double(n) / tq / 1e9;
    double d_gbs = 4.0 * double(n) / td / 1e9;
    double rq_gbs = 4.0 * double(m) / rq / 1e9;
    double rd_gbs = 4.0 * double(n) / rd / 1e9;
    std::printf(
        "%s: quantize %.2f GB/s (%.1f ms), dequantize %.2f GB/s "
        "(%.1f ms); reference %.3f / %.3f GB/s\n",
        name, q_gbs, tq * 1e3, d_gbs, td * 1e3, rq_gbs, rd_gbs);
    std::string p = std::string(name) + " ";
    ok &= report((p + "quantize / triad").c_str(), q_gbs / triad, kQuantTarget,
                 "x triad");
    ok &= report((p + "dequantize / triad").c_str(), d_gbs / triad,
                 kDequantTarget, "x triad");
    ok &= report((p + "quantize / reference").c_str(), q_gbs / rq_gbs,
                 kRefSpeedup, "x ref");
    ok &= report((p + "dequantize / reference").c_str(), d_gbs / rd_gbs,
                 kRefSpeedup, "x ref");
    std::printf("\n");
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
