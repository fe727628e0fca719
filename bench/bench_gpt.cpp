// bench_gpt: full GPT training steps (forward + loss, backward, AdamW step)
// on random byte tokens, timed per phase.
//
// Usage: bench_gpt [--layers L] [--d C] [--heads H] [--ctx T] [--batch B]
//                  [--steps N] [--bits 32|8] [--vocab V]
// Defaults: L4 d128 h4 T128 B32 (0.85 M parameters), 20 steps, 32 bits.
// Cost: about 0.1-0.3 s per step at the defaults on 2 cores.
//
// Prints the command line, then per-phase medians in ms (forward, backward,
// optimizer, step), tokens/s from the median step, over the steps after 3
// warm-up steps, cpu%: process CPU time over wall time x threads (below
// ~90% the machine was shared), and the median process CPU time of a step
// (with OMP_NUM_THREADS=1, the work of a step even on a shared machine).
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "models/gpt.h"
#include "optim/optimizer.h"

namespace {

constexpr int kWarmup = 3;

struct Args {
  kbit::GPTConfig model;
  int64_t batch = 32;
  int steps = 20;
  int bits = 32;
  bool ops = false;  // --ops 1: time the ops of one block instead
};

int64_t parse_int(const char* flag, const char* value) {
  char* end = nullptr;
  long long v = std::strtoll(value, &end, 10);
  KBIT_USER_CHECK(end && *end == '\0' && v >= 1, "[bench_gpt] expected ", flag,
                  " to be an integer >= 1, got '", value, "'");
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    KBIT_USER_CHECK(i + 1 < argc, "[bench_gpt] expected a value after ", f);
    int64_t v = parse_int(argv[i], argv[i + 1]);
    ++i;
    if (f == "--layers") {
      a.model.n_layer = v;
    } else if (f == "--d") {
      a.model.d_model = v;
    } else if (f == "--heads") {
      a.model.n_head = v;
    } else if (f == "--ctx") {
      a.model.block_size = v;
    } else if (f == "--batch") {
      a.batch = v;
    } else if (f == "--steps") {
      a.steps = int(v);
    } else if (f == "--bits") {
      KBIT_USER_CHECK(v == 32 || v == 8,
                      "[bench_gpt] expected --bits 32 or 8, "
                      "got ",
                      v);
      a.bits = int(v);
    } else if (f == "--ops") {
      a.ops = v == 1;
    } else if (f == "--vocab") {
      a.model.vocab_size = v;
    } else {
      throw kbit::UserError("[bench_gpt] unknown flag " + f +
                            "; expected --layers, --d, --heads, --ctx, "
                            "--batch, --steps, --bits, --ops or --vocab");
    }
  }
  KBIT_USER_CHECK(a.steps > kWarmup, "[bench_gpt] expected --steps > ", kWarmup,
                  ", got ", a.steps);
  return a;
}

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

kbit::Tensor random_tokens(int64_t B, int64_t T, int64_t V, kbit::Philox& rng) {
  std::vector<float> u(size_t(B * T));
  rng.fill_uniform(u.data(), B * T, 0.0f, 1.0f);
  std::vector<int32_t> v(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    v[i] = std::min(int32_t(u[i] * float(V)), int32_t(V - 1));
  }
  return kbit::Tensor::from_vector<int32_t>(v, {B, T});
}

// Fastest ms of `reps` runs of f (forward and backward of one op): on a
// shared machine the minimum is the stable estimate of an op's cost.
double time_ms(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int r = 0; r < reps + 1; ++r) {
    double t0 = now();
    f();
    if (r > 0) t.push_back(1e3 * (now() - t0));
  }
  return *std::min_element(t.begin(), t.end());
}

// One op's forward and backward at the model's shapes.
void time_op(const char* name, int reps, const kbit::Tensor& x,
             const std::function<kbit::Tensor(const kbit::Tensor&)>& f) {
  double fwd = time_ms(reps, [&] {
    kbit::NoGradGuard g;
    f(x);
  });
  double both = time_ms(reps, [&] {
    kbit::Tensor y = f(x);
    kbit::backward(y, kbit::Tensor::ones(y.shape()));
  });
  std::printf("  %-22s forward %7.2f ms  forward+backward %7.2f ms\n", name,
              fwd, both);
}

// Per-op times of one block (B T rows), to see where a step goes.
void run_ops(const Args& a) {
  kbit::Philox rng(99);
  const int64_t B = a.batch, T = a.model.block_size, C = a.model.d_model;
  const int64_t V = a.model.vocab_size, hid = a.model.mlp_ratio * C;
  const int reps = a.steps;
  auto leaf = [&](kbit::Shape s, double std) {
    kbit::Tensor t = kbit::Tensor::randn(s, rng, kbit::DType::f32, 0.0, std);
    t.set_requires_grad(true);
    return t;
  };
  kbit::Tensor x = leaf({B, T, C}, 1.0), h = leaf({B, T, hid}, 1.0);
  kbit::Tensor qkv = leaf({B, T, 3 * C}, 1.0);
  kbit::Tensor w_qkv = leaf({3 * C, C}, 0.02), b_qkv = leaf({3 * C}, 0.02);
  kbit::Tensor w_fc = leaf({hid, C}, 0.02), b_fc = leaf({hid}, 0.02);
  kbit::Tensor w_pr = leaf({C, hid}, 0.02), b_pr = leaf({C}, 0.02);
  kbit::Tensor ln_w = leaf({C}, 1.0), ln_b = leaf({C}, 0.0);
  kbit::Tensor wte = leaf({V, C}, 0.02);
  kbit::Tensor tgt = random_tokens(B * T, 1, V, rng).view({B * T});
  using kbit::Tensor;
  std::printf(
      "ops of one block at B %lld T %lld C %lld (x%lld layers), "
      "fastest of %d runs:\n",
      (long long)B, (long long)T, (long long)C, (long long)a.model.n_layer,
      reps);
  time_op("causal_attention", reps, qkv, [&](const Tensor& in) {
    return kbit::causal_attention(in, a.model.n_head);
  });
  time_op("linear qkv C->3C", reps, x,
          [&](const Tensor& in) { return kbit::linear(in, w_qkv, b_qkv); });
  time_op("linear fc C->4C", reps, x,
          [&](const Tensor& in) { return kbit::linear(in, w_fc, b_fc); });
  time_op("linear proj 4C->C", reps, h,
          [&](const Tensor& in) { return kbit::linear(in, w_pr, b_pr); });
  time_op("gelu (B, T, 4C)", reps, h,
          [&](const Tensor& in) { return kbit::gelu(in); });
  time_op("bias_gelu (B, T, 4C)", reps, h,
          [&](const Tensor& in) { return kbit::bias_gelu(in, b_fc); });
  time_op("layer_norm", reps, x,
          [&](const Tensor& in) { return kbit::layer_norm(in, ln_w, ln_b); });
  time_op("add (B, T, C)", reps, x,
          [&](const Tensor& in) { return kbit::add(in, in); });
  time_op("head + cross_entropy", reps, x, [&](const Tensor& in) {
    Tensor logits = kbit::linear(kbit::reshape(in, {B * T, C}), wte);
    return kbit::cross_entropy(logits, tgt);
  });
}

void run(const Args& a) {
  if (a.ops) return run_ops(a);
  kbit::Philox rng(1234);
  kbit::GPT model(a.model, rng);
  kbit::OptimConfig oc;
  oc.name = "adamw";
  oc.lr = 1e-3;
  oc.weight_decay = 0.1;
  oc.bits = a.bits;
  auto opt = kbit::make_optimizer(model, oc);
  const int64_t B = a.batch, T = a.model.block_size;
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  std::printf("%lld parameters, %d threads, OMP_WAIT_POLICY %s, %d steps\n",
              (long long)model.parameter_count(), omp_get_max_threads(),
              wait ? wait : "(unset)", a.steps);

  std::vector<double> fw, bw, op, st, cpu_ms;
  double cpu0 = 0, wall0 = 0;
  for (int s = 0; s < a.steps; ++s) {
    if (s == kWarmup) cpu0 = cpu_seconds(), wall0 = now();
    kbit::Tensor idx = random_tokens(B, T, a.model.vocab_size, rng);
    kbit::Tensor tgt = random_tokens(B, T, a.model.vocab_size, rng);
    double c0 = cpu_seconds(), t0 = now();
    kbit::Tensor loss = model.loss(idx, tgt);
    double t1 = now();
    kbit::backward(loss);
    double t2 = now();
    opt->step();
    opt->zero_grad();
    double t3 = now();
    if (s < kWarmup) continue;
    fw.push_back(1e3 * (t1 - t0));
    bw.push_back(1e3 * (t2 - t1));
    op.push_back(1e3 * (t3 - t2));
    st.push_back(1e3 * (t3 - t0));
    cpu_ms.push_back(1e3 * (cpu_seconds() - c0));
  }
  double cpu = (cpu_seconds() - cpu0) /
               ((now() - wall0) * double(omp_get_max_threads()));
  double ms = median(st);
  std::printf(
      "forward %.1f ms  backward %.1f ms  optimizer %.1f ms  step %.1f ms "
      "(min %.1f)  %.0f tokens/s  cpu %.0f%%  cpu-time %.1f ms/step\n",
      median(fw), median(bw), median(op), ms,
      *std::min_element(st.begin(), st.end()), double(B * T) / (ms * 1e-3),
      100 * cpu, median(cpu_ms));
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += std::string(i ? " " : "") + argv[i];
  std::printf("%s\n", cmd.c_str());
  try {
    run(parse(argc, argv));
  } catch (const kbit::UserError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const kbit::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
