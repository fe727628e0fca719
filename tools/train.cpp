// train: runs one YAML training config.
//
//   ./train CONFIG [--set key=value ...] [--out DIR]
//   ./train --resume RUN_DIR [--set key=value ...]
//   ./train --help            the usage and every config key with its doc
//
// Steps, in order:
//   1. The config is read and validated (trainer/config.h): every key,
//      type and range, with --set overrides applied on top of the file.
//   2. The data is loaded and the model and optimizer are built.
//   3. The resolved config is printed once, as a table, to stderr.
//   4. Only then is the run folder created: runs/<name> under the current
//      directory (name defaults to the config file's stem), or DIR.
//   5. Training prints one progress line per train.log_every steps and one
//      line per evaluation to stderr.
//
// The run folder holds resolved.yaml (every key, defaults filled in),
// metrics.csv (one row per logging step and per evaluation, flushed as it
// goes) and summary.json (test_accuracy, final_train_loss, param_count,
// optimizer_state_bytes, steps, wall_seconds, skipped_steps, peak bytes per
// memory tag...), written atomically.
//
// Checkpoints: RUN/checkpoint.bin every train.checkpoint_every steps and
// at the end (trainer/checkpoint.h). --resume RUN_DIR continues that run in
// its folder from its checkpoint, with its resolved.yaml as the config; --set
// may change only train.checkpoint_every, train.stop_at_step and data.path
// (the rest would change the run), and train.stop_at_step is reset to 0.
// The losses logged after a resume are bit-identical to those of a run that
// was never stopped. A missing, truncated or corrupted checkpoint, or one of
// another model, is refused (exit 2) before any file changes.
//
// An earlier run is never overwritten. If runs/<name> exists, the run goes
// to runs/<name>-2 (then -3, ...) and says so. An --out DIR that exists must
// be an empty folder; otherwise train refuses (exit 2) before doing work.
//
// model.type gpt runs trainer/train_gpt.h instead: a byte-level GPT on
// data.dataset kjv (prepared by scripts/prepare_kjv.sh) or text, with
// train.max_steps, train.max_seconds and train.grad_accum; the last line
// gives final_val_loss (the whole validation split) and tokens/s. Ctrl-C
// (SIGINT) finishes the current step, writes the checkpoint and summary.json
// (status "interrupted") and exits 130; a second Ctrl-C ends it at once.
//
// Exit codes: 0 done; 130 interrupted (gpt); 2 bad input (config, --set,
// command line, data files) or a run stopped by a non-finite loss, with one
// message on stderr that names the file, line and key; 1 an internal error. On
// bad input no run folder is created.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/optim_blockwise.h"
#include "trainer/config.h"
#include "trainer/report.h"
#include "trainer/run_dir.h"
#include "trainer/train_gpt.h"
#include "trainer/train_mlp.h"

namespace {

constexpr const char* kUsage =
    "usage: train CONFIG [--set key=value ...] [--out DIR]\n"
    "       train --resume RUN_DIR [--set key=value ...]\n"
    "       train --help\n";

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  std::string out;
  std::string resume;
  bool help = false;
};

// The value of an option given as "--opt value" or "--opt=value".
std::string option_value(int argc, char** argv, int& i, const char* name) {
  const std::string arg = argv[i];
  const std::string prefix = std::string(name) + "=";
  if (arg.rfind(prefix, 0) == 0) return arg.substr(prefix.size());
  KBIT_USER_CHECK(i + 1 < argc, name, ": expected a value after it\n", kUsage);
  return argv[++i];
}

bool is_option(const std::string& arg, const char* name) {
  return arg == name || arg.rfind(std::string(name) + "=", 0) == 0;
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      args.help = true;
    } else if (is_option(arg, "--set")) {
      args.overrides.push_back(option_value(argc, argv, i, "--set"));
    } else if (is_option(arg, "--out")) {
      args.out = option_value(argc, argv, i, "--out");
      KBIT_USER_CHECK(!args.out.empty(), "--out: expected a folder, got ''");
    } else if (is_option(arg, "--resume")) {
      args.resume = option_value(argc, argv, i, "--resume");
      KBIT_USER_CHECK(!args.resume.empty(),
                      "--resume: expected a run folder, got ''");
    } else if (arg.rfind("-", 0) == 0) {
      throw kbit::UserError("unknown option '" + arg +
                            "'; expected --set key=value, --out DIR, "
                            "--resume RUN_DIR or --help\n" +
                            kUsage);
    } else {
      KBIT_USER_CHECK(args.config.empty(), "expected one CONFIG, got '",
                      args.config, "' and '", arg, "'\n", kUsage);
      args.config = arg;
    }
  }
  if (!args.resume.empty()) {
    KBIT_USER_CHECK(args.config.empty() && args.out.empty(),
                    "--resume: expected no CONFIG and no --out (the run's ",
                    "folder holds its config), got ",
                    args.config.empty() ? "--out " + args.out : args.config,
                    "\n", kUsage);
  }
  KBIT_USER_CHECK(args.help || !args.config.empty() || !args.resume.empty(),
                  "expected a CONFIG file\n", kUsage);
  return args;
}

// Set by the first SIGINT of a gpt run; the run finishes its step, writes
// checkpoint.bin and summary.json and returns "interrupted" (exit 130). A
// second SIGINT ends the process at once (the default action).
volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_sigint(int) {
  g_stop = 1;
}

void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESETHAND;  // the next SIGINT has the default action
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

// The gpt run and its last line; the exit code.
int run_gpt(const kbit::Config& config, kbit::RunOptions options) {
  options.stop = &g_stop;
  install_sigint_handler();
  const kbit::GptRunSummary s = kbit::train_gpt(config, options);
  char line[512];
  if (s.status == "stopped" || s.status == "interrupted") {
    std::snprintf(line, sizeof line,
                  "%s after step %lld (%s); checkpoint and summary written; "
                  "continue with: train --resume %s",
                  s.status.c_str(), (long long)s.steps,
                  s.status == "stopped" ? "train.stop_at_step" : "SIGINT",
                  s.run_dir.c_str());
    std::cerr << line << "\n";
    return s.status == "interrupted" ? 130 : 0;
  }
  std::snprintf(
      line, sizeof line,
      "%s: final_val_loss %.4f | train_loss %.4f | %lld steps | "
      "%.0f tok/s | %s | %s",
      s.status == "time_limit" ? "time limit" : "done", s.final_val_loss,
      s.final_train_loss, (long long)s.steps, s.tokens_per_second,
      kbit::format_duration(s.wall_seconds).c_str(), s.run_dir.c_str());
  std::cerr << line << "\n";
  return 0;
}

void print_help() {
  std::printf(
      "%s\nConfig keys (type, default; --set key=value overrides "
      "any of them):\n",
      kUsage);
  for (const kbit::KeySpec& spec : kbit::config_schema()) {
    std::printf(
        "  %-24s %s; default %s\n  %-24s %s\n", spec.path.c_str(),
        kbit::describe_expected(spec).c_str(),
        spec.default_text.empty() ? "(see below)" : spec.default_text.c_str(),
        "", spec.doc.c_str());
  }
}

int run(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  if (args.help) {
    print_help();
    return 0;
  }
  const kbit::Config config =
      args.resume.empty()
          ? kbit::Config::load(args.config, args.overrides)
          : kbit::load_resume_config(args.resume, args.overrides);
  if (!args.out.empty()) kbit::check_out_dir(args.out);
  // The 8-bit kernels' requantization path: chosen (and KBIT_REQUANT
  // checked) now, before any file is written.
  kbit::cpu::requant_path();

  kbit::RunOptions options;
  options.out = args.out;
  options.resume = args.resume;
  options.log = [](const std::string& line) { std::cerr << line << "\n"; };
  if (config.get_string("model.type") == "gpt") return run_gpt(config, options);
  const kbit::RunSummary s = kbit::train_mlp(config, options);

  char line[256];
  if (s.status == "stopped") {
    std::snprintf(line, sizeof line,
                  "stopped after step %lld (train.stop_at_step); continue "
                  "with: train --resume %s",
                  (long long)s.steps, s.run_dir.c_str());
    std::cerr << line << "\n";
    return 0;
  }
  std::snprintf(line, sizeof line,
                "done: test_acc %.4f | test_loss %.4f | %lld steps | %s | %s",
                s.test_accuracy, s.test_loss, (long long)s.steps,
                kbit::format_duration(s.wall_seconds).c_str(),
                s.run_dir.c_str());
  std::cerr << line << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kbit::UserError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "train: internal error: " << e.what() << "\n";
    return 1;
  }
}
