// bench_optim: one AdamW step on N parameters with 32-bit, 8-bit and 4-bit
// states, side by side in one run, next to pure streaming kernels that move
// the same bytes (the memory floors).
//
// Usage: bench_optim [N ...] [--reps R] [--warm]   (default N: 1e6 1e7 1e8)
// Cost: about 2.5 GB of memory and 10-20 s at N = 1e8.
//
// The 8-bit step runs on the requantization path the kernels chose
// (kernels/cpu/optim_blockwise.h, RequantPath), and again on each path by
// name ("adam8, table path": the gathers; "adam8, affine path": the
// gather-free map, AVX-512 builds only).
//
// Per N the kernels run alternately, R times each (after two warm-up
// steps); with --warm each kernel instead runs its R times back to back, so
// a small N stays in cache (the steady-state cost of the arithmetic:
// OMP_NUM_THREADS=1 bench_optim 65536 --reps 300 --warm). The median wall
// time (and the minimum) is reported with
// parameters per second, GB/s at the bytes each must move per parameter, the
// ratio to the 32-bit step, core cycles per parameter at the nominal clock
// and cpu%: the process CPU time over wall time x threads (below ~90% the
// machine was shared and a compute-bound kernel loses more than a
// bandwidth-bound one). Bytes per parameter: 32-bit 28 (read p, g, m, v; write
// p, m, v), 8-bit 16 (p, g and p written: 12; codes m, v read and written: 4),
// 4-bit 14; the per-block absmax adds 0.06 (8-bit) / 0.25 (4-bit) and is not
// counted. The 32-bit step is optim's fused kernel (kernels/cpu/
// optim_update.h, adam_update), the same formula as the blockwise one.
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench/aligned_vector.h"

#include "kernels/cpu/optim_blockwise.h"
#include "kernels/cpu/optim_update.h"
#include "quant/codebook.h"

namespace {

using kbit::cpu::BlockwiseRule;

volatile float g_zero = 0.0f;  // keeps the traffic kernels' writes real

// Streams of the 32-bit step: read p, g, m, v; write p, m, v (28 B).
void traffic32(int64_t n, float* p, const float* g, float* m, float* v) {
  const float c = g_zero;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::fma(c, g[i], p[i]);
    m[i] = std::fma(c, g[i], m[i]);
    v[i] = std::fma(c, g[i], v[i]);
  }
}

// Streams of the 8-bit step: p, g f32; m, v one byte each (16 B).
void traffic8(int64_t n, float* p, const float* g, uint8_t* m, uint8_t* v) {
  const float c = g_zero;
  const uint8_t k = uint8_t(c);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::fma(c, g[i], p[i]);
    m[i] = uint8_t(m[i] + k);
    v[i] = uint8_t(v[i] + k);
  }
}

double process_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Wall seconds of one call; cpu gets the process CPU seconds it used.
double seconds_of(const std::function<void()>& f, double& cpu) {
  const double c0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const auto t1 = std::chrono::steady_clock::now();
  cpu = process_cpu_seconds() - c0;
  return std::chrono::duration<double>(t1 - t0).count();
}

using kbit::bench::AlignedVec;

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t h = x.size() / 2;
  return x.size() % 2 ? x[h] : 0.5 * (x[h - 1] + x[h]);
}

double cpu_ghz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      return std::atof(line.substr(line.find(':') + 1).c_str()) / 1000.0;
    }
  }
  return 0.0;
}

kbit::cpu::BlockCodebook block_codebook(const std::string& name) {
  const kbit::quant::Codebook cb = kbit::quant::make_codebook(name);
  return kbit::cpu::BlockCodebook(cb.codes().data(), cb.size());
}

struct Kernel {
  Kernel(const char* n, double b, std::function<void()> f)
      : name(n), bytes(b), run(std::move(f)) {}
  const char* name;
  double bytes;  // per parameter
  std::function<void()> run;
  std::vector<double> times;
  std::vector<double> cpu_share;  // CPU seconds / (wall seconds * threads)
};

using kbit::cpu::RequantPath;

// The requantization paths this build has (the affine one needs AVX-512).
std::vector<RequantPath> available_paths() {
  const RequantPath chosen = kbit::cpu::requant_path();
  kbit::cpu::set_requant_path(RequantPath::affine);
  const bool affine = kbit::cpu::requant_path() == RequantPath::affine;
  kbit::cpu::set_requant_path(chosen);
  if (!affine) return {RequantPath::table};
  return {RequantPath::table, RequantPath::affine};
}

// One N: returns false when the 8-bit step is slower than the 32-bit one.
bool bench_size(int64_t n, int reps, bool warm, bool judge) {
  const int64_t nb8 = (n + 255) / 256, nb4 = (n + 127) / 128;
  AlignedVec<float> p(n), g(n), m(n), v(n);
  AlignedVec<uint8_t> m8(n), v8(n), m4((n + 1) / 2), v4((n + 1) / 2);
  AlignedVec<uint8_t> t8a(n), t8b(n);
  AlignedVec<float> am8(nb8), av8(nb8), am4(nb4), av4(nb4);

  static const kbit::cpu::BlockCodebook cb_m8 = block_codebook("dynamic");
  static const kbit::cpu::BlockCodebook cb_v8 = block_codebook("udynamic");
  static const kbit::cpu::BlockCodebook cb_m4 = block_codebook("dynamic4");
  static const kbit::cpu::BlockCodebook cb_v4 = block_codebook("ulinear_nz");

  // First touch in parallel, in the kernels' static partition.
  const uint8_t z8 = uint8_t(cb_m8.nearest(0.0f));
  const uint8_t z4 = uint8_t(cb_m4.nearest(0.0f));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t h = uint32_t(i) * 2654435761u;
    const float r1 = float(h >> 8) / 16777216.0f - 0.5f;
    h = h * 1664525u + 1013904223u;
    const float r2 = float(h >> 8) / 16777216.0f - 0.5f;
    p[i] = 0.2f * r1;
    g[i] = 0.02f * r2;
    m[i] = v[i] = 0.0f;
    m8[i] = z8;
    v8[i] = 0;
    t8a[i] = t8b[i] = 0;
    if (i % 2 == 0) m4[i / 2] = uint8_t(z4 | z4 << 4), v4[i / 2] = 0;
  }

  kbit::cpu::BlockwiseHyper h;  // AdamW: lr 1e-3, betas (0.9, 0.999)
  h.weight_decay = 1e-2f;
  h.step = 10;
  kbit::cpu::AdamHyper h32;  // the same step for the 32-bit kernel
  h32.weight_decay = h.weight_decay;
  h32.step = h.step;
  kbit::cpu::BlockwiseArgs a8;
  a8.n = n, a8.block_size = 256, a8.bits = 8, a8.p = p.data(), a8.g = g.data();
  a8.s1 = {m8.data(), am8.data(), &cb_m8};
  a8.s2 = {v8.data(), av8.data(), &cb_v8};
  kbit::cpu::BlockwiseArgs a4 = a8;
  a4.block_size = 128, a4.bits = 4;
  a4.s1 = {m4.data(), am4.data(), &cb_m4};
  a4.s2 = {v4.data(), av4.data(), &cb_v4};

  std::vector<Kernel> ks = {
      {"adam32 (optim_update, f32)", 28,
       [&] {
         kbit::cpu::adam_update(h32, p.data(), g.data(), m.data(), v.data(), n);
       }},
      {"adam8 blockwise (B=256)", 16,
       [&] { kbit::cpu::blockwise_step(BlockwiseRule::adam, h, a8); }},
      {"adam4 blockwise (B=128)", 14,
       [&] { kbit::cpu::blockwise_step(BlockwiseRule::adam, h, a4); }},
      {"adam32-traffic (28 B)", 28,
       [&] { traffic32(n, p.data(), g.data(), m.data(), v.data()); }},
      {"adam8-traffic (16 B)", 16,
       [&] { traffic8(n, p.data(), g.data(), t8a.data(), t8b.data()); }},
  };
  // The 8-bit step on each requantization path, the choice undone after.
  const RequantPath chosen = kbit::cpu::requant_path();
  for (RequantPath path : available_paths()) {
    ks.emplace_back(
        path == RequantPath::table ? "adam8, table path" : "adam8, affine path",
        16, [&, path] {
          kbit::cpu::set_requant_path(path);
          kbit::cpu::blockwise_step(BlockwiseRule::adam, h, a8);
          kbit::cpu::set_requant_path(chosen);
        });
  }
  for (Kernel& kr : ks) kr.run(), kr.run();  // warm-up, states non-zero
  auto time_once = [](Kernel& kr) {
    double cpu = 0;
    const double t = seconds_of(kr.run, cpu);
    kr.times.push_back(t);
    kr.cpu_share.push_back(cpu / (t * omp_get_max_threads()));
  };
  if (warm) {
    for (Kernel& kr : ks) {
      kr.run();  // this kernel's data back in cache
      for (int r = 0; r < reps; ++r) time_once(kr);
    }
  } else {
    for (int r = 0; r < reps; ++r) {
      for (Kernel& kr : ks) time_once(kr);
    }
  }

  const double ghz = cpu_ghz();
  const int threads = omp_get_max_threads();
  const double t32 = median(ks[0].times);
  std::fprintf(stderr, "\nN = %.0f  (%d reps%s, median)\n", double(n), reps,
               warm ? " back to back" : " alternating");
  std::fprintf(stderr, "%-32s %9s %9s %11s %7s %9s %11s %5s\n", "kernel", "ms",
               "min ms", "params/s", "GB/s", "vs 32bit", "cyc/param/c", "cpu%");
  for (const Kernel& kr : ks) {
    const double t = median(kr.times);
    const double tmin = *std::min_element(kr.times.begin(), kr.times.end());
    std::fprintf(stderr, "%-32s %9.3f %9.3f %11.3e %7.2f %8.2fx %11.2f %5.0f\n",
                 kr.name, t * 1e3, tmin * 1e3, double(n) / t,
                 kr.bytes * double(n) / t / 1e9, t32 / t,
                 t * ghz * 1e9 * threads / double(n),
                 100.0 * median(kr.cpu_share));
  }
  const double t8 = median(ks[1].times);
  if (!judge) return true;
  const bool pass = t8 <= t32;
  std::fprintf(stderr,
               "%s: 8-bit step %.3f ms vs 32-bit %.3f ms (%.2fx) at "
               "N = %.0e\n",
               pass ? "PASS" : "FAIL", t8 * 1e3, t32 * 1e3, t32 / t8,
               double(n));
  return pass;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  int reps = 0;
  bool warm = false;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (s == "--warm") {
      warm = true;
    } else {
      const double x = std::atof(s.c_str());
      if (!(x >= 1 && x <= 2e9)) {
        std::fprintf(stderr,
                     "bench_optim: expected N in [1, 2e9], --reps R "
                     "or --warm, got '%s'\n",
                     s.c_str());
        return 2;
      }
      sizes.push_back(int64_t(x));
    }
  }
  if (sizes.empty()) sizes = {1000000, 10000000, 100000000};
  std::fprintf(stderr, "command:");
  for (int i = 0; i < argc; ++i) std::fprintf(stderr, " %s", argv[i]);
  std::fprintf(stderr,
               "\nthreads %d (OMP_NUM_THREADS), cpu %.2f GHz "
               "(/proc/cpuinfo, for cyc/param/core)\n",
               omp_get_max_threads(), cpu_ghz());
  const char* env = std::getenv("KBIT_REQUANT");
  std::fprintf(stderr,
               "requantization: %s path (KBIT_REQUANT=%s; automatic times "
               "both on a small step and keeps the faster)\n",
               kbit::cpu::requant_path_name(kbit::cpu::requant_path()),
               env ? env : "unset");
  bool ok = true;
  for (int64_t n : sizes) {
    const int r = reps > 0 ? reps
                           : (n >= 50000000  ? 9
                              : n >= 5000000 ? 21
                                             : 61);
    ok = bench_size(n, r, warm, n >= 100000000) && ok;
  }
  return ok ? 0 : 1;
}
