// bench_quant: blockwise quantize / dequantize throughput against this
// machine's memory bandwidth, measured in the same run.
//
//   build/bench_quant [--n LOG2] [--reps R] [--block B]
//   (defaults: 2^26 values, 7 reps, block 256)
//
// Times are medians of the clean runs of R (a run is loaded when other
// processes took this process's CPUs; the count is printed). GB/s counts the
// f32 side only (4 bytes per value: read by quantize, written by dequantize).
// The bandwidth is a STREAM-like triad a = b + s * c over three f32 arrays of n
// values, counted as 12 bytes per value. The reference loops
// (kernels/ref/quantize.h, one thread): dequantize on all n values, quantize
// (argmin over the whole codebook, slow) on a slice of n / 64 values. Targets:
// dequantize >= 0.6 of the triad, quantize >= 0.3, both >= 5x the reference.
// Cost: about 3 GB of memory and 20-40 s on 2 cores.
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "bench/aligned_vector.h"

#include "core/philox.h"
#include "kernels/cpu/quantize.h"
#include "kernels/ref/quantize.h"
#include "quant/codebook.h"

using namespace kbit;

namespace {

int64_t g_block = 256;                  // --block (a runtime value)
constexpr double kDequantTarget = 0.6;  // fraction of the triad
constexpr double kQuantTarget = 0.3;
constexpr double kRefSpeedup = 5.0;
constexpr int64_t kRefSlice = 64;  // the reference runs on n / 64 values

// Process CPU seconds (all threads).
double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// A sample is clean when this process had its threads' CPUs for at least
// kCleanShare of the wall time (other processes share the machine).
constexpr double kCleanShare = 0.8;
int g_loaded_samples = 0, g_samples = 0;

// Median wall seconds of the clean samples of f (of all, when none is
// clean). `threads`: how many threads f keeps busy.
double median_seconds(int reps, int threads, const std::function<void()>& f) {
  std::vector<double> clean, all;
  f();  // warm up: page faults, caches
  for (int r = 0; r < reps; ++r) {
    double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    double wall = std::chrono::duration<double>(t1 - t0).count();
    double share = (cpu_seconds() - c0) / (wall * threads);
    all.push_back(wall);
    if (share >= kCleanShare) clean.push_back(wall);
  }
  g_samples += reps;
  g_loaded_samples += reps - int(clean.size());
  std::vector<double>& t = clean.empty() ? all : clean;
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Sample {
  double seconds;
  bool clean;
};

// One timed run of f (threads busy threads).
Sample timed(int threads, const std::function<void()>& f) {
  double c0 = cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  f();
  auto t1 = std::chrono::steady_clock::now();
  double wall = std::chrono::duration<double>(t1 - t0).count();
  bool clean = (cpu_seconds() - c0) / (wall * threads) >= kCleanShare;
  ++g_samples;
  g_loaded_samples += !clean;
  return {wall, clean};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Tensor-like (64-byte aligned) f32 arrays.
using FloatArray = kbit::bench::AlignedVec<float>;

// Fresh array touched in parallel (first touch places pages).
FloatArray parallel_array(int64_t n, float value) {
  FloatArray v(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) v[i] = value;
  return v;
}

// STREAM-like triad a = b + s * c over three f32 arrays.
struct Triad {
  explicit Triad(int64_t n)
      : n(n),
        a(parallel_array(n, 0.f)),
        b(parallel_array(n, 1.f)),
        c(parallel_array(n, 2.f)) {}
  void run() {
    const float s = 3.f;
    float* pa = a.data();
    const float *pb = b.data(), *pc = c.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
  }
  double gbs(double seconds) const {
    return 12.0 * double(n) / seconds / 1e9;
  }
  int64_t n;
  FloatArray a, b, c;
};

// This thread's CPU nanoseconds per value of f over m values, the median
// of reps; not slowed by other processes taking the CPU (cache effects
// aside), so it still compares kernels when the machine is loaded.
double cpu_ns_per_value(int reps, int64_t m, const std::function<void()>& f) {
  std::vector<double> t;
  f();
  for (int r = 0; r < reps; ++r) {
    timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    f();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    t.push_back(double(b.tv_sec - a.tv_sec) * 1e9 +
                double(b.tv_nsec - a.tv_nsec));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2] / double(m);
}

// One thread, an L2-resident slice: CPU ns per value, fast and reference.
void report_cpu_time(const quant::Codebook& cb, const float* x) {
  constexpr int64_t m = 1 << 14;
  const cpu::CodeSearch& s = cb.search();
  const std::vector<float>& c = cb.codes();
  std::vector<uint8_t> codes(m);
  std::vector<float> absmax(m / g_block), out(m);
  auto quant = [&](int64_t b) {
    float inv = cpu::inverse_absmax(absmax[b / g_block] =
                                        cpu::block_absmax(x + b, g_block));
    if (s.packed) {
      cpu::quantize_block_packed(s, x + b, g_block, inv, codes.data() + b / 2);
    } else {
      cpu::quantize_block(s, x + b, g_block, inv, codes.data() + b);
    }
  };
  double fq = cpu_ns_per_value(21, m, [&] {
    for (int64_t b = 0; b < m; b += g_block) quant(b);
  });
  double fd = cpu_ns_per_value(21, m, [&] {
    for (int64_t b = 0; b < m; b += g_block) {
      if (s.packed) {
        cpu::dequantize_block_packed(s, codes.data() + b / 2, g_block,
                                     absmax[b / g_block], out.data() + b);
      } else {
        cpu::dequantize_block(s, codes.data() + b, g_block, absmax[b / g_block],
                              out.data() + b);
      }
    }
  });
  double rq = cpu_ns_per_value(3, m, [&] {
    ref::quantize_blockwise(c.data(), cb.size(), x, m, g_block, absmax.data(),
                            codes.data());
  });
  double rd = cpu_ns_per_value(21, m, [&] {
    ref::dequantize_blockwise(c.data(), cb.size(), codes.data(), absmax.data(),
                              m, g_block, out.data());
  });
  std::printf(
      "%s, one thread, CPU ns/value in cache: quantize %.3f (ref "
      "%.1f, %.0fx), dequantize %.3f (ref %.3f, %.1fx)\n",
      cb.name().c_str(), fq, rq, rq / fq, fd, rd, rd / fd);
}

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
    if (k == "--block") g_block = std::atoll(argv[i + 1]);
  }
  bool pow2 =
      g_block >= 32 && g_block <= 4096 && (g_block & (g_block - 1)) == 0;
  if (log2n < 16 || log2n > 30 || reps < 1 || !pow2) {
    std::fprintf(stderr,
                 "bench_quant: expected --n 16..30, --reps >= 1 and --block "
                 "32, 64, ..., 4096\n");
    return 2;
  }
  int64_t n = int64_t(1) << log2n;
  std::printf("command:");
  for (int i = 0; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\nn = 2^%d f32 values, block %lld, %d threads, median of %d\n",
              log2n, (long long)g_block, omp_get_max_threads(), reps);
  double load[1] = {0};
  if (getloadavg(load, 1) == 1)
    std::printf(
        "load average at start: %.2f (other processes slow this "
        "down; rerun when it is high)\n",
        load[0]);

  Triad triad(n);
  FloatArray x = parallel_array(n, 0.f);
  Philox rng(1);
  rng.fill_normal(x.data(), n);
  FloatArray out = parallel_array(n, 0.f);
  std::vector<float> absmax(size_t(cpu::num_blocks(n, g_block)));
  const int threads = omp_get_max_threads();
  const double gb = 4.0 * double(n) / 1e9;  // f32 side of one pass
  bool ok = true;
  for (const char* name : {"dynamic", "nf4"}) {
    quant::Codebook cb = quant::make_codebook(name);
    const cpu::CodeSearch& s = cb.search();
    std::vector<uint8_t> codes(size_t(cpu::code_bytes(n, cb.packed())));
    auto quantize = [&] {
      cpu::quantize_blockwise(s, x.data(), n, g_block, absmax.data(),
                              codes.data());
    };
    auto dequantize = [&] {
      cpu::dequantize_blockwise(s, codes.data(), absmax.data(), n, g_block,
                                out.data());
    };
    // Rounds of triad, quantize, dequantize back to back, so that each
    // ratio compares runs under the same conditions; medians over the
    // clean rounds (over all when none is clean).
    triad.run();
    quantize();
    dequantize();
    std::vector<double> tri, q, d, qr, dr, tri_c, q_c, d_c, qr_c, dr_c;
    for (int r = 0; r < reps; ++r) {
      Sample st = timed(threads, [&] { triad.run(); });
      Sample sq = timed(threads, quantize);
      Sample sd = timed(threads, dequantize);
      double tg = triad.gbs(st.seconds), qg = gb / sq.seconds,
             dg = gb / sd.seconds;
      bool clean = st.clean && sq.clean && sd.clean;
      for (auto [all, cl, v] :
           {std::tuple{&tri, &tri_c, tg}, std::tuple{&q, &q_c, qg},
            std::tuple{&d, &d_c, dg}, std::tuple{&qr, &qr_c, qg / tg},
            std::tuple{&dr, &dr_c, dg / tg}}) {
        all->push_back(v);
        if (clean) cl->push_back(v);
      }
    }
    bool use_clean = !q_c.empty();
    auto pick = [&](std::vector<double>& all, std::vector<double>& cl) {
      return median(use_clean ? cl : all);
    };
    int64_t m = n / kRefSlice;
    const std::vector<float>& c = cb.codes();
    double rq = median_seconds(1, 1, [&] {
      ref::quantize_blockwise(c.data(), cb.size(), x.data(), m, g_block,
                              absmax.data(), codes.data());
    });
    double rd = median_seconds(3, 1, [&] {
      ref::dequantize_blockwise(c.data(), cb.size(), codes.data(),
                                absmax.data(), n, g_block, out.data());
    });
    double q_gbs = pick(q, q_c), d_gbs = pick(d, d_c);
    double rq_gbs = 4.0 * double(m) / rq / 1e9;
    double rd_gbs = gb / rd;
    std::printf(
        "%s: triad %.2f GB/s, quantize %.2f GB/s, dequantize %.2f GB/s "
        "(medians of %s rounds); reference %.3f / %.3f GB/s\n",
        name, pick(tri, tri_c), q_gbs, d_gbs, use_clean ? "clean" : "all",
        rq_gbs, rd_gbs);
    report_cpu_time(cb, x.data());
    std::string p = std::string(name) + " ";
    ok &= report((p + "quantize / triad").c_str(), pick(qr, qr_c), kQuantTarget,
                 "x triad");
    ok &= report((p + "dequantize / triad").c_str(), pick(dr, dr_c),
                 kDequantTarget, "x triad");
    ok &= report((p + "quantize / reference").c_str(), q_gbs / rq_gbs,
                 kRefSpeedup, "x ref");
    ok &= report((p + "dequantize / reference").c_str(), d_gbs / rd_gbs,
                 kRefSpeedup, "x ref");
    std::printf("\n");
  }
  std::printf(
      "%d of %d samples were loaded (this process had < %.0f%% of "
      "its CPUs)%s\n",
      g_loaded_samples, g_samples, 100 * kCleanShare,
      g_loaded_samples ? "; rerun on a quiet machine" : "");
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
