// Autoregressive byte sampling from a GPT (see generate.h).
#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "autograd/node.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/tensor.h"

namespace kbit {
namespace {

int argmax(const std::vector<float>& logits) {
  return int(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// The k-th largest logit: entries below it are dropped by top-k.
float kth_largest(std::vector<float> logits, int64_t k) {
  std::nth_element(logits.begin(), logits.begin() + (k - 1), logits.end(),
                   std::greater<float>());
  return logits[size_t(k - 1)];
}

// Logits of the last position for the context bytes `ctx` (1 <= t <= T).
std::vector<float> last_logits(const GPT& model, const std::string& ctx) {
  const int64_t t = int64_t(ctx.size());
  std::vector<int32_t> ids(ctx.size());
  for (size_t i = 0; i < ctx.size(); ++i) ids[i] = uint8_t(ctx[i]);
  Tensor idx = Tensor::from_vector<int32_t>(ids, {1, t});  // (1, t)
  Tensor logits = model.forward(idx);                      // (1, t, V)
  const int64_t V = logits.shape()[2];
  Tensor last = logits.slice_view(1, t - 1, t);  // (1, 1, V)
  std::vector<float> row = last.to_vector<float>();
  KBIT_CHECK(int64_t(row.size()) == V, "[generate] expected ", V,
             " logits, got ", row.size());
  return row;
}

}  // namespace

int sample_byte(const std::vector<float>& logits, double temperature,
                int64_t top_k, double u) {
  KBIT_CHECK(!logits.empty(), "[generate] expected logits, got none");
  if (temperature == 0) return argmax(logits);

  const int64_t V = int64_t(logits.size());
  const float floor_logit = top_k > 0 && top_k < V
                                ? kth_largest(logits, top_k)
                                : -std::numeric_limits<float>::infinity();
  const float top = logits[size_t(argmax(logits))];
  std::vector<double> p(logits.size(), 0.0);
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] < floor_logit) continue;
    p[i] = std::exp((double(logits[i]) - top) / temperature);
    total += p[i];
  }

  double target = u * total, run = 0;
  int last_kept = argmax(logits);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) continue;
    run += p[i];
    last_kept = int(i);
    if (target < run) return int(i);
  }
  return last_kept;  // u * total rounded up to total
}

std::string generate(const GPT& model, const std::string& prompt,
                     const SampleOptions& options) {
  KBIT_CHECK(options.tokens >= 0, "[generate] expected tokens >= 0, got ",
             options.tokens);
  KBIT_CHECK(std::isfinite(options.temperature) && options.temperature >= 0,
             "[generate] expected a finite temperature >= 0, got ",
             options.temperature);
  KBIT_CHECK(options.top_k >= 0, "[generate] expected top_k >= 0, got ",
             options.top_k);

  const size_t T = size_t(model.config().block_size);
  NoGradGuard no_grad;
  Philox rng(options.seed);
  std::string ctx = prompt.empty() ? std::string("\n") : prompt;
  if (ctx.size() > T) ctx.erase(0, ctx.size() - T);
  std::string out;
  for (int64_t i = 0; i < options.tokens; ++i) {
    std::vector<float> logits = last_logits(model, ctx);
    const double u = options.temperature == 0 ? 0.0 : rng.next_uniform();
    const char byte =
        char(sample_byte(logits, options.temperature, options.top_k, u));
    out.push_back(byte);
    ctx.push_back(byte);
    if (ctx.size() > T) ctx.erase(0, 1);  // the last T bytes
  }
  return out;
}

}  // namespace kbit
