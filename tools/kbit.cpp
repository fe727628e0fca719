// kbit: look at k-bit data types and blockwise quantization from the shell,
// and sample text from a trained GPT.
//
//   kbit map NAME [--format table|csv]
//   kbit quantize --dtype NAME [--block N] -- v1 v2 ...
//   kbit error --dtype NAME [--dtype NAME ...] [--block N]
//              [--dist normal|uniform|laplace|lognormal] [--n N] [--seed S]
//   kbit sample RUN_DIR [--prompt TEXT] [--tokens N] [--temperature T]
//               [--top-k K] [--seed S]
//
// Results go to stdout. Bad input (an unknown data type, a block size that
// is not a power of two in 32..4096, a value that is not a number, a run
// folder without a readable gpt checkpoint) is reported on stderr with the
// valid choices, exit code 2.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "core/tensor.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "quant/blockwise.h"
#include "quant/codebook.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/train_gpt.h"

using namespace kbit;
using namespace kbit::quant;

namespace {

const char* kUsage =
    "usage:\n"
    "  kbit map NAME [--format table|csv]\n"
    "      the codebook: index, code and the type's own value (int4: -7..7,\n"
    "      fp4: -12..12) where it has one\n"
    "  kbit quantize --dtype NAME [--block N] -- v1 v2 ...\n"
    "      normalization, codes, dequantized values and errors (default\n"
    "      block: the whole list)\n"
    "  kbit error --dtype NAME [--dtype NAME ...] [--block N]\n"
    "             [--dist normal|uniform|laplace|lognormal] [--n N] "
    "[--seed S]\n"
    "      round-trip error on N random values (defaults: block 64, normal,\n"
    "      n 1048576, seed 0); several --dtype print one table\n"
    "  kbit sample RUN_DIR [--prompt TEXT] [--tokens N] [--temperature T]\n"
    "              [--top-k K] [--seed S]\n"
    "      text from a gpt run's checkpoint.bin: the prompt, then N sampled\n"
    "      bytes (defaults: prompt \"\", tokens 200, temperature 1, 0 =\n"
    "      greedy; top-k 0 = all bytes; seed 0); a prompt longer than the\n"
    "      model's context is cropped to its last block_size bytes\n"
    "data types: ";

// Relative error divides by |x| + kRelEps (as bitsandbytes' tests do).
constexpr double kRelEps = 1e-8;
// quantile codebooks outside `kbit error` are fitted to this many N(0, 1)
// draws (seed 0), normalized per block of kQuantileBlock.
constexpr int64_t kQuantileSample = int64_t(1) << 16;
constexpr int64_t kQuantileBlock = 64;
constexpr int64_t kMaxSamples = int64_t(1) << 28;

struct Args {
  std::string command;
  std::vector<std::string> positional;  // before "--"
  std::vector<std::string> values;      // after "--"
  std::map<std::string, std::vector<std::string>> options;

  const std::string* get(const std::string& key) const {
    auto it = options.find(key);
    return it == options.end() ? nullptr : &it->second.back();
  }
};

Args parse_args(int argc, char** argv,
                const std::vector<std::string>& allowed) {
  Args a;
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--") {
      for (++i; i < argc; ++i) a.values.push_back(argv[i]);
      break;
    }
    if (s.rfind("--", 0) == 0) {
      std::string key = s.substr(2), list;
      bool ok = false;
      for (const auto& k : allowed) {
        list += (list.empty() ? "--" : ", --") + k;
        ok = ok || k == key;
      }
      KBIT_USER_CHECK(ok, "[kbit ", a.command, "] unknown option '", s,
                      "'; expected one of ", list);
      KBIT_USER_CHECK(i + 1 < argc, "[kbit ", a.command, "] option ", s,
                      " expects a value");
      a.options[key].push_back(argv[++i]);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

double parse_number(const std::string& s, const std::string& what) {
  char* end = nullptr;
  double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  KBIT_USER_CHECK(!s.empty() && end && *end == '\0' && std::isfinite(v),
                  "[kbit] expected ", what,
                  " to be a finite decimal number (e.g. -0.5, 3, 1e-3), got '",
                  s, "'");
  return v;
}

int64_t parse_int(const std::string& s, const std::string& what) {
  char* end = nullptr;
  long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
  KBIT_USER_CHECK(!s.empty() && end && *end == '\0', "[kbit] expected ", what,
                  " to be an integer, got '", s, "'");
  return v;
}

int64_t parse_block(const Args& a, int64_t fallback) {
  const std::string* s = a.get("block");
  if (!s) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(s->c_str(), &end, 10);
  if (s->empty() || *end != '\0') v = -1;  // rejected below, with choices
  try {
    check_block_size(v);
  } catch (const UserError&) {
    throw UserError(str("[kbit ", a.command,
                        "] expected --block 32, 64, 128, 256, 512, 1024, "
                        "2048, 4096 or 0 (whole tensor), got '",
                        *s, "'"));
  }
  return v;
}

// Values divided by the absmax of their block (for fitting quantiles).
std::vector<float> block_normalized(const std::vector<float>& x, int64_t bs) {
  std::vector<float> out(x.size());
  int64_t n = int64_t(x.size());
  for (int64_t b = 0; b < n; b += bs) {
    int64_t e = std::min(n, b + bs);
    float m = 0.f;
    for (int64_t i = b; i < e; ++i) m = std::max(m, std::fabs(x[i]));
    for (int64_t i = b; i < e; ++i) out[i] = m > 0 ? x[i] / m : 0.f;
  }
  return out;
}

bool quantile_name(const std::string& name, int& bits) {
  if (name == "quantile") return bits = 8, true;
  if (name.size() == 9 && name.rfind("quantile", 0) == 0 && name[8] >= '2' &&
      name[8] <= '8')
    return bits = name[8] - '0', true;
  return false;
}

// A named codebook; quantile types are fitted to `fit` when given, else to
// the fixed N(0, 1) sample.
Codebook codebook_for(const std::string& name,
                      const std::vector<float>* fit = nullptr) {
  int bits;
  if (!quantile_name(name, bits)) return make_codebook(name);
  std::vector<float> sample;
  if (fit) {
    sample = *fit;
  } else {
    std::vector<float> draws(static_cast<size_t>(kQuantileSample));
    Philox rng(0);
    rng.fill_normal(draws.data(), kQuantileSample);
    sample = block_normalized(draws, kQuantileBlock);
  }
  return make_quantile(sample.data(), int64_t(sample.size()), bits);
}

std::string describe(const Codebook& cb) {
  return str(cb.name(), ": ", cb.bits(), " bits, ",
             cb.is_signed() ? "signed" : "unsigned", ", ", cb.size(), " codes",
             cb.packed() ? " (two per byte)" : "");
}

// "-6/7" for types whose own values are integers, else "".
std::string as_fraction(const Codebook& cb, int code) {
  double s = cb.raw_scale();
  double raw = cb.code(code) * s;
  if (s <= 0 || s != std::floor(s) ||
      std::fabs(raw - std::nearbyint(raw)) > 1e-4)
    return "";
  if (std::nearbyint(raw) == 0) return "0";
  return str((long long)std::nearbyint(raw), "/", (long long)s);
}

int cmd_map(int argc, char** argv) {
  Args a = parse_args(argc, argv, {"format"});
  KBIT_USER_CHECK(a.positional.size() == 1,
                  "[kbit map] expected one data type name, got ",
                  a.positional.size(), "; data types: ", codebook_choices());
  std::string format = a.get("format") ? *a.get("format") : "table";
  KBIT_USER_CHECK(format == "table" || format == "csv",
                  "[kbit map] expected --format table or csv, got '", format,
                  "'");
  Codebook cb = codebook_for(a.positional[0]);
  bool raw = cb.raw_scale() > 0;
  if (format == "csv") {
    std::printf("index,code%s\n", raw ? ",raw" : "");
    for (int i = 0; i < cb.size(); ++i) {
      std::printf("%d,%.9g", i, cb.code(i));
      if (raw) std::printf(",%.7g", cb.code(i) * cb.raw_scale());
      std::printf("\n");
    }
    return 0;
  }
  std::printf("%s\n", describe(cb).c_str());
  if (raw)
    std::printf("value = code * %.9g (%s)\n", cb.raw_scale(),
                cb.raw_label().c_str());
  std::printf("%5s  %15s", "index", "code");
  if (raw) std::printf("  %15s", cb.raw_label().c_str());
  std::printf("\n");
  for (int i = 0; i < cb.size(); ++i) {
    std::printf("%5d  %15.8g", i, cb.code(i));
    if (raw) std::printf("  %15.7g", cb.code(i) * cb.raw_scale());
    std::printf("\n");
  }
  return 0;
}

int cmd_quantize(int argc, char** argv) {
  Args a = parse_args(argc, argv, {"dtype", "block"});
  KBIT_USER_CHECK(a.get("dtype"), "[kbit quantize] expected --dtype NAME; ",
                  "data types: ", codebook_choices());
  KBIT_USER_CHECK(a.positional.empty(), "[kbit quantize] unexpected '",
                  a.positional.empty() ? "" : a.positional[0],
                  "'; values go after --, e.g. -- -0.8 -0.7 0");
  KBIT_USER_CHECK(!a.values.empty(),
                  "[kbit quantize] expected values after --, e.g. -- -0.8 "
                  "-0.7 0");
  int64_t bs = parse_block(a, kWholeTensor);
  Codebook cb = codebook_for(*a.get("dtype"));
  std::vector<float> x;
  for (const std::string& s : a.values)
    x.push_back(float(parse_number(s, "each value")));

  Tensor t = Tensor::from_vector<float>(x, {int64_t(x.size())});
  QuantizedTensor q = quantize(t, cb, bs);
  std::vector<float> y = dequantize(q).to_vector<float>();
  std::vector<float> absmax = q.absmax().to_vector<float>();
  int64_t eff = q.effective_block_size();
  std::printf("%s\n", describe(cb).c_str());
  std::printf("block size %lld%s, %lld block(s)\n", (long long)eff,
              bs == kWholeTensor ? " (whole tensor)" : "",
              (long long)q.num_blocks());
  std::printf("%5s  %6s  %13s  %13s  %13s  %5s  %13s  %8s  %13s  %13s\n", "i",
              "block", "value", "absmax", "normalized", "index", "code", "as",
              "dequantized", "error");
  std::vector<float> normalized;
  for (size_t i = 0; i < x.size(); ++i) {
    int64_t b = int64_t(i) / eff;
    float inv = absmax[b] >= 1.17549435e-38f ? 1.f / absmax[b] : 0.f;
    float v = x[i] * inv;
    int code = cb.nearest(v);
    normalized.push_back(v);
    std::printf(
        "%5zu  %6lld  %13.7g  %13.7g  %13.7g  %5d  %13.7g  %8s  "
        "%13.7g  %13.4g\n",
        i, (long long)b, x[i], absmax[b], v, code, cb.code(code),
        as_fraction(cb, code).c_str(), y[i], double(y[i]) - x[i]);
  }
  std::printf("normalized: [");
  for (size_t i = 0; i < normalized.size(); ++i)
    std::printf("%s%.7g", i ? ", " : "", normalized[i]);
  std::printf("]\n");
  return 0;
}

std::vector<float> draw(const std::string& dist, int64_t n, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n));
  Philox rng(seed);
  if (dist == "normal") {
    rng.fill_normal(x.data(), n);
  } else if (dist == "uniform") {
    rng.fill_uniform(x.data(), n);
  } else if (dist == "laplace") {  // scale 1, by the inverse CDF
    for (float& v : x) {
      double u = rng.next_uniform() - 0.5;
      v = float(-std::copysign(1.0, u) * std::log(1 - 2 * std::fabs(u)));
    }
  } else if (dist == "lognormal") {
    rng.fill_normal(x.data(), n);
    for (float& v : x) v = std::exp(v);
  } else {
    throw UserError(
        str("[kbit error] expected --dist normal, uniform, "
            "laplace or lognormal, got '",
            dist, "'"));
  }
  return x;
}

int cmd_error(int argc, char** argv) {
  Args a = parse_args(argc, argv, {"dtype", "block", "dist", "n", "seed"});
  KBIT_USER_CHECK(a.options.count("dtype"),
                  "[kbit error] expected at least one --dtype NAME; data "
                  "types: ",
                  codebook_choices());
  KBIT_USER_CHECK(a.positional.empty() && a.values.empty(),
                  "[kbit error] unexpected argument; see kbit --help");
  int64_t bs = parse_block(a, 64);
  std::string dist = a.get("dist") ? *a.get("dist") : "normal";
  int64_t n = a.get("n") ? parse_int(*a.get("n"), "--n") : int64_t(1) << 20;
  KBIT_USER_CHECK(n >= 1 && n <= kMaxSamples,
                  "[kbit error] expected --n in 1..", kMaxSamples, ", got ", n);
  int64_t seed = a.get("seed") ? parse_int(*a.get("seed"), "--seed") : 0;
  KBIT_USER_CHECK(seed >= 0, "[kbit error] expected --seed >= 0, got ", seed);
  for (const std::string& name : a.options["dtype"]) {
    int bits;
    if (!quantile_name(name, bits)) make_codebook(name);  // checks the name
  }
  std::vector<Codebook> books;
  std::vector<float> x = draw(dist, n, uint64_t(seed));
  std::vector<float> fit = block_normalized(x, bs == 0 ? n : bs);
  for (const std::string& name : a.options["dtype"])
    books.push_back(codebook_for(name, &fit));

  Tensor t = Tensor::from_vector<float>(x, {n});
  std::printf("dist %s, n %lld, block %lld%s, seed %lld\n", dist.c_str(),
              (long long)n, (long long)(bs == 0 ? n : bs),
              bs == 0 ? " (whole tensor)" : "", (long long)seed);
  std::printf("%-12s  %4s  %5s  %12s  %12s  %10s  %12s\n", "dtype", "bits",
              "codes", "mean abs", "mean rel", "to zero", "worst abs");
  for (const Codebook& cb : books) {
    std::vector<float> y = dequantize(quantize(t, cb, bs)).to_vector<float>();
    double abs = 0, rel = 0, worst = 0;
    int64_t zeroed = 0;
    for (int64_t i = 0; i < n; ++i) {
      double d = std::fabs(double(x[i]) - double(y[i]));
      abs += d;
      rel += d / (std::fabs(double(x[i])) + kRelEps);
      worst = std::max(worst, d);
      zeroed += x[i] != 0.f && y[i] == 0.f;
    }
    std::printf("%-12s  %4d  %5d  %12.6g  %12.6g  %9.4f%%  %12.6g\n",
                cb.name().c_str(), cb.bits(), cb.size(), abs / double(n),
                rel / double(n), 100.0 * double(zeroed) / double(n), worst);
  }
  return 0;
}

// ---- kbit sample ----

// RUN_DIR/name, which must be a file; else one UserError naming both.
std::string run_file(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  KBIT_USER_CHECK(fs::is_directory(dir), "[kbit sample] expected RUN_DIR to ",
                  "be a run folder (resolved.yaml, checkpoint.bin), got '", dir,
                  "', which is not a folder");
  const std::string path = (fs::path(dir) / name).string();
  KBIT_USER_CHECK(fs::is_regular_file(path), "[kbit sample] expected ", path,
                  " in the run folder; is '", dir, "' a finished gpt run?");
  return path;
}

// The run's GPT with the checkpoint's weights.
std::unique_ptr<GPT> load_run_model(const std::string& dir) {
  const std::string yaml = run_file(dir, "resolved.yaml");
  const std::string ckpt = run_file(dir, "checkpoint.bin");
  const Config config = Config::load(yaml, {});
  const std::string type = config.get_string("model.type");
  KBIT_USER_CHECK(type == "gpt", "[kbit sample] expected a gpt run, got ", yaml,
                  " with model.type ", type);
  Philox rng(0);  // the init is overwritten by the checkpoint
  auto model = std::make_unique<GPT>(gpt_config_from(config), rng);
  const Checkpoint c = read_checkpoint(ckpt);
  load_parameters(ckpt, c, model->named_parameters());
  return model;
}

SampleOptions sample_options(const Args& a) {
  SampleOptions o;
  if (a.get("tokens")) o.tokens = parse_int(*a.get("tokens"), "--tokens");
  KBIT_USER_CHECK(o.tokens >= 0, "[kbit sample] expected --tokens >= 0, got ",
                  o.tokens);
  if (a.get("temperature"))
    o.temperature = parse_number(*a.get("temperature"), "--temperature");
  KBIT_USER_CHECK(o.temperature >= 0,
                  "[kbit sample] expected --temperature >= 0 (0 = greedy), "
                  "got ",
                  o.temperature);
  if (a.get("top-k")) o.top_k = parse_int(*a.get("top-k"), "--top-k");
  KBIT_USER_CHECK(o.top_k >= 0,
                  "[kbit sample] expected --top-k >= 0 (0 = all), got ",
                  o.top_k);
  int64_t seed = a.get("seed") ? parse_int(*a.get("seed"), "--seed") : 0;
  KBIT_USER_CHECK(seed >= 0, "[kbit sample] expected --seed >= 0, got ", seed);
  o.seed = uint64_t(seed);
  return o;
}

int cmd_sample(int argc, char** argv) {
  Args a = parse_args(argc, argv,
                      {"prompt", "tokens", "temperature", "top-k", "seed"});
  KBIT_USER_CHECK(a.positional.size() == 1 && a.values.empty(),
                  "[kbit sample] expected one RUN_DIR, got ",
                  a.positional.size() + a.values.size(), " arguments");
  const SampleOptions options = sample_options(a);
  const std::unique_ptr<GPT> model = load_run_model(a.positional[0]);

  std::string prompt = a.get("prompt") ? *a.get("prompt") : "";
  const size_t T = size_t(model->config().block_size);
  if (prompt.size() > T) {
    std::fprintf(stderr,
                 "kbit sample: warning: the prompt has %zu bytes, more than "
                 "the context of %zu; using its last %zu\n",
                 prompt.size(), T, T);
    prompt.erase(0, prompt.size() - T);
  }
  const std::string text = generate(*model, prompt, options);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

int run(int argc, char** argv) {
  std::string cmd = argc >= 2 ? argv[1] : "";
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::printf("%s%s\n", kUsage, codebook_choices().c_str());
    return 0;
  }
  if (cmd == "map") return cmd_map(argc, argv);
  if (cmd == "quantize") return cmd_quantize(argc, argv);
  if (cmd == "error") return cmd_error(argc, argv);
  if (cmd == "sample") return cmd_sample(argc, argv);
  throw UserError(
      str("[kbit] expected a command map, quantize, error or "
          "sample, got '",
          cmd, "'\n", kUsage, codebook_choices()));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UserError& e) {
    std::fprintf(stderr, "kbit: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kbit: error: %s\n", e.what());
    return 1;
  }
}
