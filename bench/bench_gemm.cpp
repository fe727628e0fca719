// build/bench_gemm: kbit's f32 GEMM against its peers, side by side.
//
// For each shape (MxNxK, row-major C = A B) it times kbit::cpu::gemm, raw
// OpenBLAS cblas_sgemm (the OpenMP build), raw oneDNN dnnl_sgemm and Eigen's
// own product (no BLAS behind it: the "too slow" mark), and for the
// attention shapes kbit::cpu::gemm_batched against a loop of single GEMMs.
// Repetitions of all benchmarks are interleaved at random (Google
// Benchmark's random interleaving), so host drift hits every implementation
// alike; the table at the end uses medians over repetitions. Each sample
// also records "other_cores", the CPU the rest of the machine used meanwhile,
// after waiting up to 0.5 s for a quiet moment; the table takes the medians
// of the clean repetitions (other processes below 0.15 cores) and says how
// many were clean.
//
// Cost: about 2-4 minutes on 2 cores. Any --benchmark_* flag overrides the
// defaults below (e.g. --benchmark_repetitions=3, --benchmark_filter=1024).
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

// GCC 12 warns of uninitialized values inside Eigen's AVX-512 packet code
// (a known false positive); the warning is only silenced for Eigen.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/philox.h"
#include "kernels/cpu/gemm.h"

#ifdef EIGEN_USE_BLAS
#error "the Eigen mark must be Eigen's own product, without EIGEN_USE_BLAS"
#endif

namespace {

using kbit::cpu::GemmArgs;

// kbit must reach this fraction of the best peer (issue 2).
constexpr double kPassRatio = 0.90;
// A sample is loaded when other processes used more cores than this.
constexpr double kQuietCores = 0.15;
// Each repetition runs a fixed number of iterations, about this long at
// kGuessGflops (so that one repetition is one call, one wait for quiet).
constexpr double kRepetitionSeconds = 0.2;
constexpr double kGuessGflops = 200;

int64_t iterations_for(double gflop) {
  return std::max<int64_t>(1,
                           int64_t(kRepetitionSeconds * kGuessGflops / gflop));
}

// ---- load of the rest of the machine ----

double seconds_now() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

double machine_busy_seconds() {  // all CPUs, non-idle, from /proc/stat
  std::ifstream f("/proc/stat");
  std::string cpu;
  double user, nice, sys, idle, iowait, irq, softirq, steal;
  f >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  return (user + nice + sys + irq + softirq + steal) /
         double(sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
  rusage r;
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

// Cores used by other processes between start() and cores().
struct OtherLoad {
  double wall = seconds_now(), busy = machine_busy_seconds(),
         own = own_cpu_seconds();
  double cores() const {
    double dt = seconds_now() - wall;
    return (machine_busy_seconds() - busy - (own_cpu_seconds() - own)) / dt;
  }
};

void wait_for_quiet() {
  for (int i = 0; i < 10; ++i) {
    OtherLoad load;
    usleep(50000);
    if (load.cores() < kQuietCores) return;
  }
}

// ---- problems ----

struct Shape {
  int64_t M, N, K;
  bool trans_a = false, trans_b = false;
  std::string name() const {
    std::string s =
        std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
    if (trans_a || trans_b) {
      s += std::string("/") + (trans_a ? "T" : "N") + (trans_b ? "T" : "N");
    }
    return s;
  }
  GemmArgs args() const {
    return {trans_a,         trans_b,         M, N,   K,
            trans_a ? M : K, trans_b ? K : N, N, 1.0, 0.0};
  }
};

// A (M, K) or (K, M), B (K, N) or (N, K), C (M, N), `batch` of each,
// filled once per shape and kept for every benchmark of it.
struct Buffers {
  std::vector<float> A, B, C;
};

Buffers& buffers(const Shape& s, int64_t batch) {
  static std::map<std::string, Buffers> cache;
  Buffers& b = cache[s.name() + "*" + std::to_string(batch)];
  if (b.A.empty()) {
    kbit::Philox rng(1);
    b.A.resize(size_t(batch * s.M * s.K));
    b.B.resize(size_t(batch * s.K * s.N));
    b.C.assign(size_t(batch * s.M * s.N), 0.f);
    rng.fill_uniform(b.A.data(), int64_t(b.A.size()), -1.f, 1.f);
    rng.fill_uniform(b.B.data(), int64_t(b.B.size()), -1.f, 1.f);
  }
  return b;
}

using RowMajor =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// One C = op(A) op(B) by each implementation.
void gemm_kbit(const GemmArgs& g, const float* A, const float* B, float* C) {
  kbit::cpu::gemm(g, A, B, C);
}

void gemm_openblas(const GemmArgs& g, const float* A, const float* B,
                   float* C) {
  auto tr = [](bool t) { return t ? CblasTrans : CblasNoTrans; };
  cblas_sgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N),
              int(g.K), 1.f, A, int(g.lda), B, int(g.ldb), 0.f, C, int(g.ldc));
}

void gemm_onednn(const GemmArgs& g, const float* A, const float* B, float* C) {
  dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.M, g.N, g.K, 1.f,
             A, g.lda, B, g.ldb, 0.f, C, g.ldc);
}

void gemm_eigen(const GemmArgs& g, const float* A, const float* B, float* C) {
  Eigen::Map<const RowMajor> a(A, g.trans_a ? g.K : g.M, g.trans_a ? g.M : g.K);
  Eigen::Map<const RowMajor> b(B, g.trans_b ? g.N : g.K, g.trans_b ? g.K : g.N);
  Eigen::Map<RowMajor> c(C, g.M, g.N);
  if (!g.trans_a && !g.trans_b) c.noalias() = a * b;
  if (g.trans_a && !g.trans_b) c.noalias() = a.transpose() * b;
  if (!g.trans_a && g.trans_b) c.noalias() = a * b.transpose();
  if (g.trans_a && g.trans_b) c.noalias() = a.transpose() * b.transpose();
}

using GemmFn = void (*)(const GemmArgs&, const float*, const float*, float*);

void run_gemm(benchmark::State& state, Shape s, GemmFn fn) {
  Buffers& b = buffers(s, 1);
  const GemmArgs g = s.args();
  fn(g, b.A.data(), b.B.data(), b.C.data());  // warm up
  wait_for_quiet();
  OtherLoad load;
  for (auto _ : state) {
    fn(g, b.A.data(), b.B.data(), b.C.data());
    benchmark::ClobberMemory();
  }
  state.counters["other_cores"] = load.cores();
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * double(s.M * s.N * s.K),
                         benchmark::Counter::kIsIterationInvariantRate);
}

// ---- batched: kbit's batched GEMM against a loop of single ones ----

enum class Batched { kbit, loop, loop_parallel };

void run_batched(benchmark::State& state, Shape s, int64_t batch, Batched how) {
  Buffers& b = buffers(s, batch);
  const GemmArgs g = s.args();
  const int64_t sa = s.M * s.K, sb = s.K * s.N, sc = s.M * s.N;
  auto once = [&] {
    if (how == Batched::kbit) {
      kbit::cpu::gemm_batched(g, batch, b.A.data(), sa, b.B.data(), sb,
                              b.C.data(), sc);
    } else if (how == Batched::loop) {  // each GEMM threaded by the library
      for (int64_t i = 0; i < batch; ++i) {
        kbit::cpu::gemm(g, b.A.data() + i * sa, b.B.data() + i * sb,
                        b.C.data() + i * sc);
      }
    } else {  // by hand: one single-threaded GEMM per thread
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < batch; ++i) {
        kbit::cpu::gemm(g, b.A.data() + i * sa, b.B.data() + i * sb,
                        b.C.data() + i * sc);
      }
    }
  };
  once();
  wait_for_quiet();
  OtherLoad load;
  for (auto _ : state) {
    once();
    benchmark::ClobberMemory();
  }
  state.counters["other_cores"] = load.cores();
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * double(batch * s.M * s.N * s.K),
                         benchmark::Counter::kIsIterationInvariantRate);
}

// ---- the summary table ----

// Per benchmark name ("gemm/1024x1024x1024/kbit"): the GFLOP/s and
// other_cores of every repetition, collected from the individual runs.
struct Samples {
  std::vector<double> gflops, other_cores;
};
std::map<std::string, Samples> g_samples;

// Prints only the aggregate rows; keeps every repetition for the table.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  TableReporter() : ConsoleReporter(isatty(1) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> aggregates;
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Aggregate) {
        aggregates.push_back(r);
      } else if (!r.error_occurred) {
        Samples& s = g_samples[r.run_name.function_name];
        s.gflops.push_back(r.counters.at("GFLOP/s").value);
        s.other_cores.push_back(r.counters.at("other_cores").value);
      }
    }
    if (!aggregates.empty()) ConsoleReporter::ReportRuns(aggregates);
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One row of a table: the benchmarks it compares, by name. It uses the
// medians of the clean repetitions (other processes below kQuietCores) when
// every benchmark of the row has at least two, else the medians of all
// repetitions, so that a row always compares like with like.
struct Row {
  std::vector<std::string> names;
  int fewest_clean = 0, total = 0;
  bool clean_only = false;

  explicit Row(std::vector<std::string> n) : names(std::move(n)) {
    fewest_clean = 1 << 30;
    for (const std::string& name : names) {
      const Samples& s = g_samples[name];
      int clean = 0;
      for (double c : s.other_cores) clean += c < kQuietCores;
      fewest_clean = std::min(fewest_clean, clean);
      total = std::max(total, int(s.gflops.size()));
    }
    clean_only = fewest_clean >= 2;
  }

  double median_of(size_t i) const {
    const Samples& s = g_samples[names[i]];
    std::vector<double> v;
    for (size_t j = 0; j < s.gflops.size(); ++j) {
      if (!clean_only || s.other_cores[j] < kQuietCores) {
        v.push_back(s.gflops[j]);
      }
    }
    return median(v);
  }

  std::string clean_note() const {
    return std::to_string(fewest_clean) + "/" + std::to_string(total) +
           (clean_only ? " clean" : " all");
  }
};

int print_gemm_table(const std::vector<Shape>& shapes) {
  int failed = 0;
  std::printf("\n%-16s %8s %9s %8s %7s %6s %8s  %s\n", "MxNxK", "kbit",
              "OpenBLAS", "oneDNN", "Eigen", "ratio", "result", "clean");
  for (const Shape& s : shapes) {
    const std::string p = "gemm/" + s.name() + "/";
    const Row row({p + "kbit", p + "openblas", p + "onednn", p + "eigen"});
    const double kbit = row.median_of(0), blas = row.median_of(1),
                 dnnl = row.median_of(2);
    const double best = std::max(blas, dnnl);
    if (kbit == 0 || best == 0) continue;  // filtered out
    const double ratio = kbit / best;
    const bool pass = ratio >= kPassRatio;
    failed += !pass;
    std::printf("%-16s %8.1f %9.1f %8.1f %7.1f %6.2f %8s  %s\n",
                s.name().c_str(), kbit, blas, dnnl, row.median_of(3), ratio,
                pass ? "PASS" : "FAIL", row.clean_note().c_str());
  }
  std::printf(
      "(GFLOP/s, medians of the clean repetitions, where other "
      "processes used < %.2f cores, when each benchmark of the row has "
      "2 or more (\"clean\"), else of all repetitions (\"all\"); "
      "ratio = kbit / best of OpenBLAS and oneDNN, PASS at >= %.2f)\n",
      kQuietCores, kPassRatio);
  return failed;
}

void print_batched_table(const std::vector<std::pair<Shape, int64_t>>& cases) {
  std::printf("\n%-22s %8s %8s %9s %6s  %s\n", "batch x MxNxK", "batched",
              "loop", "omp loop", "ratio", "clean");
  for (auto& [s, batch] : cases) {
    const std::string p = "batched/b" + std::to_string(batch) + "/" + s.name();
    const Row row({p + "/kbit", p + "/loop", p + "/omp_loop"});
    const double kbit = row.median_of(0), loop = row.median_of(1);
    if (kbit == 0 || loop == 0) continue;
    std::printf("%-22s %8.1f %8.1f %9.1f %6.2f  %s\n",
                (std::to_string(batch) + " x " + s.name()).c_str(), kbit, loop,
                row.median_of(2), kbit / loop, row.clean_note().c_str());
  }
  std::printf(
      "(GFLOP/s, medians; loop = one threaded kbit::cpu::gemm per "
      "matrix, omp loop = one single-threaded GEMM per thread; "
      "ratio = batched / loop; clean as above)\n");
}

// OpenBLAS 0.3.21 does not know some newer CPUs (e.g. Xeon family 6 model
// 207) and then runs its SSE3 "Prescott" kernels at a fraction of its
// speed. To compare with OpenBLAS at its best, re-run this program with
// OPENBLAS_CORETYPE naming the matching kernels; the library reads it only
// when it loads.
void fix_openblas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (std::strcmp(openblas_get_corename(), "Prescott") != 0) return;
  const char* core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                     : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                       : nullptr;
  if (core == nullptr) return;
  std::fprintf(stderr,
               "bench_gemm: OpenBLAS chose its Prescott (SSE3) kernels for "
               "this CPU; re-running with OPENBLAS_CORETYPE=%s\n",
               core);
  setenv("OPENBLAS_CORETYPE", core, 1);
  execv("/proc/self/exe", argv);
  std::perror("bench_gemm: execv");  // then go on with Prescott
}

}  // namespace

int main(int argc, char** argv) {
  fix_openblas_core(argv);
  const std::vector<Shape> shapes = {{1024, 1024, 1024},
                                     {2048, 2048, 2048},
                                     {4096, 768, 768},
                                     {4096, 3072, 768}};
  for (const Shape& s : shapes) {
    const std::pair<const char*, GemmFn> impls[] = {{"kbit", gemm_kbit},
                                                    {"openblas", gemm_openblas},
                                                    {"onednn", gemm_onednn},
                                                    {"eigen", gemm_eigen}};
    for (auto& [name, fn] : impls) {
      benchmark::RegisterBenchmark(("gemm/" + s.name() + "/" + name).c_str(),
                                   run_gemm, s, fn)
          ->Iterations(iterations_for(2e-9 * double(s.M * s.N * s.K)))
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }

  // Attention (batch 128 = 16 sequences x 8 heads, T 128, head dim 32):
  // q k^T, att v, and the backward products; then two larger sizes on
  // either side of kBatchParallelMaxMNK.
  const std::vector<std::pair<Shape, int64_t>> batched = {
      {{128, 128, 32, false, true}, 128},
      {{128, 32, 128}, 128},
      {{128, 32, 128, true, false}, 128},
      {{256, 256, 256}, 16},
      {{512, 512, 512}, 4}};
  for (auto& [s, batch] : batched) {
    const std::pair<const char*, Batched> hows[] = {
        {"kbit", Batched::kbit},
        {"loop", Batched::loop},
        {"omp_loop", Batched::loop_parallel}};
    for (auto& [name, how] : hows) {
      benchmark::RegisterBenchmark(
          ("batched/b" + std::to_string(batch) + "/" + s.name() + "/" + name)
              .c_str(),
          run_batched, s, batch, how)
          ->Iterations(iterations_for(2e-9 * double(batch * s.M * s.N * s.K)))
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }

  std::vector<char*> args = {argv[0]};
  std::string defaults[] = {"--benchmark_repetitions=7",
                            "--benchmark_enable_random_interleaving=true"};
  for (std::string& d : defaults) args.push_back(d.data());
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;

  const kbit::cpu::GemmBackend be = kbit::cpu::gemm_backend();
  std::fprintf(stderr,
               "bench_gemm: %d OpenMP threads; kbit f32 = %s; OpenBLAS "
               "core %s, parallel mode %d (2 = OpenMP)\n",
               omp_get_max_threads(), be.f32, be.blas_core, be.blas_parallel);
  TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const int failed = print_gemm_table(shapes);
  print_batched_table(batched);
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += std::string(i ? " " : "") + argv[i];
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::printf("\ncommand: %s%s%s (%d OpenMP threads)\n",
              core ? "OPENBLAS_CORETYPE=" : "", core ? core : "",
              (core ? " " + cmd : cmd).c_str(), omp_get_max_threads());
  return failed == 0 ? 0 : 1;
}
