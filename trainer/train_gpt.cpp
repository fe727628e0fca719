// The GPT training loop (see train_gpt.h for what it writes and when).
//
// B batch size (windows per micro-batch), T block size (bytes per window),
// k = train.grad_accum micro-batches per step, V = 256 byte values.
#include "trainer/train_gpt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "autograd/engine.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/storage.h"
#include "data/text.h"
#include "optim/optimizer.h"
#include "trainer/checkpoint.h"
#include "trainer/report.h"
#include "trainer/run_dir.h"
#include "trainer/schedule.h"

namespace kbit {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kVocab = 256;  // byte-level tokens
// The training-batch and fixed-validation-sample streams are disjoint
// stretches of the seed's Philox stream, far from the init stream (2^60
// words apart), like the MLP run's data and dropout streams.
constexpr uint64_t kDataStreamOffset = uint64_t(1) << 60;
constexpr uint64_t kEvalStreamOffset = uint64_t(3) << 60;
// Windows per forward pass of the final whole-split evaluation: large
// enough to keep the GEMMs busy, small enough for a few MB of logits.
constexpr int64_t kFinalEvalRows = 64;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string kjv_missing_message(const std::string& dir) {
  return "the KJV corpus is not prepared in " + dir +
         " (expected train.txt, val.txt and a stamp file); prepare it with "
         "scripts/prepare_kjv.sh (it needs the Debian package bible-kjv; "
         "./train and ./test run it when the stamp is missing), or set "
         "KBIT_CACHE to the folder above kjv/";
}

TextSplit load_data(const Config& c, int64_t block_size) {
  const std::string dataset = c.get_string("data.dataset");
  KBIT_USER_CHECK(dataset == "kjv" || dataset == "text",
                  c.origin("data.dataset"),
                  ": data.dataset: expected kjv or text for model.type gpt, "
                  "got ",
                  dataset);
  std::string path = c.get_string("data.path");
  if (path.empty()) {
    KBIT_USER_CHECK(dataset == "kjv", c.origin("data.path"),
                    ": data.path: expected a text file or a corpus folder "
                    "for data.dataset text, got none");
    path = kjv_corpus_dir();
    std::error_code ec;
    KBIT_USER_CHECK(std::filesystem::is_regular_file(path + "/stamp", ec),
                    c.origin("data.dataset"),
                    ": data.dataset kjv: ", kjv_missing_message(path));
  }
  try {
    return load_text(path, block_size);
  } catch (const UserError& e) {
    throw UserError(c.origin("data.path") + ": data.path: " + e.what());
  }
}

// Mean loss of `model` over windows at `offsets` of `data`, `rows` windows
// per forward pass, recording no graph. Every window has T targets, so the
// mean over windows is the mean over tokens.
double mean_loss(const GPT& model, const std::vector<uint8_t>& data,
                 const std::vector<int64_t>& offsets, int64_t rows) {
  NoGradGuard no_grad;
  const int64_t T = model.config().block_size;
  const int64_t n = int64_t(offsets.size());
  double sum = 0;
  for (int64_t b = 0; b < n; b += rows) {
    const int64_t m = std::min(rows, n - b);
    Tensor idx = Tensor::empty({m, T}, DType::i32, MemTag::workspace);
    Tensor targets = Tensor::empty({m, T}, DType::i32, MemTag::workspace);
    for (int64_t r = 0; r < m; ++r) {
      copy_window(data, offsets[size_t(b + r)], T, r, idx, targets);
    }
    sum += model.loss(idx, targets).item() * double(m);
  }
  return sum / double(n);
}

// One run, from loaded data to summary.json.
class GptRun {
 public:
  GptRun(const Config& config, const RunOptions& options, TextSplit data,
         Clock::time_point start);
  GptRunSummary run();

 private:
  void open_run_dir();
  void restore();
  void save_checkpoint() const;
  // Why the run stops after this step ("" = it goes on).
  std::string stop_reason() const;
  GptRunSummary finish(const std::string& status, bool final_eval);
  void train_step();
  void log_window();
  void run_eval();
  void run_final_eval();
  void stop_on_non_finite(double loss);
  void write_summary(const std::string& status) const;
  int64_t tokens_per_step() const { return batch_size_ * block_size_ * accum_; }
  int64_t tokens() const { return step_ * tokens_per_step(); }
  // Training time since the run began, resumes included.
  double elapsed() const {
    return elapsed_before_ + seconds_since(loop_start_);
  }
  double wall_seconds() const { return wall_before_ + seconds_since(start_); }
  double tokens_per_second() const {
    return double((step_ - start_step_) * tokens_per_step()) /
           std::max(step_seconds_, 1e-9);
  }
  void emit(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  const Config& config_;
  RunOptions options_;
  TextSplit data_;
  Clock::time_point start_, loop_start_;
  uint64_t seed_;
  std::unique_ptr<GPT> model_;
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  int64_t batch_size_, block_size_, accum_, total_steps_, log_every_;
  int64_t eval_every_, checkpoint_every_, stop_at_step_;
  double max_seconds_;
  std::vector<int64_t> eval_offsets_;  // the fixed validation sample

  int64_t step_ = 0;           // steps done
  double wall_before_ = 0;     // wall seconds before a resume
  double elapsed_before_ = 0;  // training-loop seconds before a resume
  double step_seconds_ = 0;    // seconds inside train_step, this process
  int64_t start_step_ = 0;     // step_ when this process began

  std::string run_dir_;
  std::unique_ptr<MetricsCsv> metrics_;
  // The logging window: steps since the last progress line.
  double window_loss_ = 0;
  int64_t window_steps_ = 0;
  double window_seconds_ = 0;  // inside train_step
  double last_window_loss_ = NAN;
  double last_val_sample_ = NAN;
  int64_t last_eval_step_ = -1;
  double final_val_loss_ = NAN;
};

GptRun::GptRun(const Config& config, const RunOptions& options, TextSplit data,
               Clock::time_point start)
    : config_(config),
      options_(options),
      data_(std::move(data)),
      start_(start),
      seed_(uint64_t(config.get_int("seed"))),
      batch_size_(config.get_int("train.batch_size")),
      block_size_(config.get_int("model.block_size")),
      accum_(config.get_int("train.grad_accum")),
      total_steps_(config.get_int("train.max_steps")),
      log_every_(config.get_int("train.log_every")),
      eval_every_(config.get_int("train.eval_every")),
      checkpoint_every_(config.get_int("train.checkpoint_every")),
      stop_at_step_(config.get_int("train.stop_at_step")),
      max_seconds_(config.get_double("train.max_seconds")) {
  Philox init_rng(seed_);
  model_ = std::make_unique<GPT>(gpt_config_from(config), init_rng);
  optimizer_ = build_module_optimizer(config, *model_);

  schedule_.peak_lr = config.get_double("optim.lr");
  schedule_.warmup_steps = config.get_int("train.warmup_steps");
  schedule_.total_steps = total_steps_;
  schedule_.cosine = config.get_string("train.schedule") == "cosine";
  schedule_.min_lr_ratio = config.get_double("train.min_lr_ratio");

  // The fixed validation sample: eval_batches x B window offsets.
  const int64_t n = config.get_int("train.eval_batches") * batch_size_;
  const uint64_t starts = uint64_t(data_.val.size()) - uint64_t(block_size_);
  Philox rng(seed_, kEvalStreamOffset);
  for (int64_t i = 0; i < n; ++i) {
    eval_offsets_.push_back(int64_t((uint64_t(rng.next_u32()) * starts) >> 32));
  }
}

GptRunSummary GptRun::run() {
  // A resume checks its checkpoint first: a bad one gives one message.
  if (!options_.resume.empty()) restore();
  start_step_ = step_;
  std::string table = config_.table();
  table.pop_back();  // the last newline
  emit("config " + config_.path() + "\n" + table);
  emit(str("data: ", data_.origin, " (", data_.train.size(), " train bytes, ",
           data_.val.size(), " val bytes); model: ", model_->parameter_count(),
           " parameters"));
  open_run_dir();

  loop_start_ = Clock::now();
  while (step_ < total_steps_) {
    train_step();
    if (eval_every_ > 0 && step_ % eval_every_ == 0) run_eval();
    if (step_ == total_steps_) break;
    const std::string reason = stop_reason();
    if (!reason.empty()) {
      return finish(reason, reason == "time_limit");
    }
    if (checkpoint_every_ > 0 && step_ % checkpoint_every_ == 0) {
      save_checkpoint();
    }
  }
  return finish("completed", true);
}

std::string GptRun::stop_reason() const {
  if (options_.stop && *options_.stop) return "interrupted";
  if (stop_at_step_ > 0 && step_ == stop_at_step_) return "stopped";
  if (max_seconds_ > 0 && elapsed() > max_seconds_) return "time_limit";
  return "";
}

GptRunSummary GptRun::finish(const std::string& status, bool final_eval) {
  if (final_eval) {
    if (last_eval_step_ != step_) run_eval();
    run_final_eval();
  }
  save_checkpoint();
  write_summary(status);
  GptRunSummary s;
  s.run_dir = run_dir_;
  s.status = status;
  s.final_train_loss = last_window_loss_;
  s.final_val_loss = final_val_loss_;
  s.val_loss_sample = last_val_sample_;
  s.tokens_per_second = tokens_per_second();
  s.tokens = tokens();
  s.steps = step_;
  s.optimizer_state_bytes = optimizer_->state_bytes();
  s.param_count = model_->parameter_count();
  s.skipped_steps = optimizer_->skipped_steps();
  s.wall_seconds = wall_seconds();
  return s;
}

void GptRun::open_run_dir() {
  if (!options_.resume.empty()) {
    run_dir_ = options_.resume;
    emit(str("run folder: ", run_dir_, " (resumed at step ", step_, ")"));
    metrics_ = MetricsCsv::resume(run_dir_ + "/metrics.csv", step_,
                                  MetricsCsv::gpt_header());
    return;
  }
  // Everything is checked: from here on the run folder exists.
  run_dir_ = create_run_dir(config_.get_string("name"), options_.out);
  emit("run folder: " + run_dir_);
  write_file_atomic(run_dir_ + "/resolved.yaml", config_.to_yaml());
  metrics_ = std::make_unique<MetricsCsv>(run_dir_ + "/metrics.csv",
                                          MetricsCsv::gpt_header());
}

void GptRun::restore() {
  const std::string path = options_.resume + "/checkpoint.bin";
  const Checkpoint c = read_checkpoint(path);
  // The model's shape first: its message names the parameter.
  load_parameters(path, c, model_->named_parameters());
  // The run's shape: another value means another schedule or data order.
  c.expect_counters(path,
                    {{"total_steps", total_steps_},
                     {"batch_size", batch_size_},
                     {"grad_accum", accum_},
                     {"block_size", block_size_},
                     {"train_bytes", int64_t(data_.train.size())},
                     {"val_bytes", int64_t(data_.val.size())}},
                    "config and data", "config and corpus");
  load_optimizer_state(*optimizer_, c.optimizer_state, path);

  step_ = c.counter(path, "step");
  KBIT_USER_CHECK(step_ >= 0 && step_ <= total_steps_, "checkpoint ", path,
                  ": step ", step_, " is outside [0, ", total_steps_, "]");
  window_steps_ = c.counter(path, "window.steps");
  last_eval_step_ = c.counter(path, "last_eval.step");
  window_loss_ = c.real(path, "window.loss");
  last_window_loss_ = c.real(path, "last_window_loss");
  last_val_sample_ = c.real(path, "last_val_sample");
  wall_before_ = c.real(path, "wall_seconds");
  elapsed_before_ = c.real(path, "elapsed_seconds");
}

void GptRun::save_checkpoint() const {
  CheckpointMeta m;
  m.config_text = config_.to_yaml();
  m.counters = {{"step", step_},
                {"total_steps", total_steps_},
                {"batch_size", batch_size_},
                {"grad_accum", accum_},
                {"block_size", block_size_},
                {"train_bytes", int64_t(data_.train.size())},
                {"val_bytes", int64_t(data_.val.size())},
                {"window.steps", window_steps_},
                {"last_eval.step", last_eval_step_}};
  m.reals = {{"window.loss", window_loss_},
             {"last_window_loss", last_window_loss_},
             {"last_val_sample", last_val_sample_},
             {"wall_seconds", wall_seconds()},
             {"elapsed_seconds", elapsed()}};
  kbit::save_checkpoint(run_dir_ + "/checkpoint.bin", m,
                        model_->named_parameters(),
                        save_optimizer_state(*optimizer_));
}

void GptRun::train_step() {
  const Clock::time_point t0 = Clock::now();
  optimizer_->set_lr(schedule_.at(step_));
  optimizer_->zero_grad();
  double loss_sum = 0;
  for (int64_t m = 0; m < accum_; ++m) {
    // Micro-batch m of this step: a pure function of (seed, step, m).
    const uint64_t word = uint64_t((step_ * accum_ + m) * batch_size_);
    Philox rng(seed_, kDataStreamOffset + word);
    Tensor idx, targets;  // (B, T) i32
    sample_batch(data_.train, batch_size_, block_size_, rng, idx, targets);
    Tensor loss = model_->loss(idx, targets);
    const double value = loss.item();
    if (!std::isfinite(value)) stop_on_non_finite(value);
    loss_sum += value;
    // The mean over k B T tokens: each micro-batch's mean weighs 1 / k.
    backward(accum_ > 1 ? mul_scalar(loss, 1.0 / double(accum_)) : loss);
  }
  optimizer_->step();
  const double seconds = seconds_since(t0);

  ++step_;
  step_seconds_ += seconds;
  window_seconds_ += seconds;
  window_loss_ += loss_sum / double(accum_);
  ++window_steps_;
  if (step_ % log_every_ == 0 || step_ == total_steps_) log_window();
}

void GptRun::log_window() {
  GptProgress p;
  p.step = step_;
  p.total_steps = total_steps_;
  p.loss = window_loss_ / double(window_steps_);
  p.lr = optimizer_->lr();
  // A resumed window's earlier steps ran in another process: rates count
  // the steps timed here.
  const double seconds = std::max(window_seconds_, 1e-9);
  const int64_t timed = std::min(window_steps_, step_ - start_step_);
  p.ms_per_step = 1e3 * seconds / double(std::max<int64_t>(timed, 1));
  p.tokens_per_s = double(timed * tokens_per_step()) / seconds;
  p.eta_seconds = 1e-3 * p.ms_per_step * double(total_steps_ - step_);
  p.optim_state_bytes = optimizer_->state_bytes();
  p.skipped_steps = optimizer_->skipped_steps();
  emit(format_gpt_progress(p));
  GptMetricsRow row;
  row.step = step_;
  row.tokens = tokens();
  row.train_loss = p.loss;
  row.lr = p.lr;
  row.ms_per_step = p.ms_per_step;
  row.tokens_per_s = p.tokens_per_s;
  row.elapsed_s = elapsed();
  metrics_->write(row);

  last_window_loss_ = p.loss;
  window_loss_ = 0;
  window_steps_ = 0;
  window_seconds_ = 0;
}

void GptRun::run_eval() {
  const Clock::time_point t0 = Clock::now();
  last_val_sample_ = mean_loss(*model_, data_.val, eval_offsets_, batch_size_);
  last_eval_step_ = step_;
  emit(format_gpt_eval(step_, total_steps_, "val_loss", last_val_sample_,
                       seconds_since(t0)));
  GptMetricsRow row;
  row.step = step_;
  row.tokens = tokens();
  row.val_loss = last_val_sample_;
  row.lr = optimizer_->lr();
  row.elapsed_s = elapsed();
  metrics_->write(row);
}

void GptRun::run_final_eval() {
  const Clock::time_point t0 = Clock::now();
  // Non-overlapping windows of T: offsets 0, T, 2T, ... while the window's
  // T + 1 bytes fit.
  std::vector<int64_t> offsets;
  const int64_t n = int64_t(data_.val.size());
  for (int64_t o = 0; o + block_size_ + 1 <= n; o += block_size_) {
    offsets.push_back(o);
  }
  final_val_loss_ = mean_loss(*model_, data_.val, offsets, kFinalEvalRows);
  emit(format_gpt_eval(step_, total_steps_, "final_val_loss", final_val_loss_,
                       seconds_since(t0)) +
       str(" | ", offsets.size(), " windows of ", block_size_));
}

void GptRun::stop_on_non_finite(double loss) {
  GptMetricsRow row;
  row.step = step_ + 1;
  row.tokens = tokens();
  row.train_loss = loss;
  row.lr = optimizer_->lr();
  row.elapsed_s = elapsed();
  metrics_->write(row);
  write_summary("non_finite_loss");
  throw UserError(
      non_finite_loss_message(step_ + 1, loss, optimizer_->lr(), run_dir_));
}

void GptRun::write_summary(const std::string& status) const {
  const int64_t params = model_->parameter_count();
  const int64_t state = optimizer_->state_bytes();
  JsonObject s;
  s.add("name", config_.get_string("name"))
      .add("config", config_.path())
      .add("run_dir", run_dir_)
      .add("status", status)
      .add("final_train_loss", last_window_loss_)
      .add("final_val_loss", final_val_loss_)
      .add("val_loss_sample", last_val_sample_)
      .add("tokens_per_second", tokens_per_second())
      .add("tokens", tokens())
      .add("steps", step_)
      .add("total_steps", total_steps_)
      .add("param_count", params)
      .add("optimizer_state_bytes", state)
      .add("optimizer_state_bytes_per_param", double(state) / double(params))
      .add("skipped_steps", optimizer_->skipped_steps())
      .add("wall_seconds", wall_seconds())
      .add("elapsed_seconds", elapsed())
      .add("data", data_.origin)
      .add("train_bytes", int64_t(data_.train.size()))
      .add("val_bytes", int64_t(data_.val.size()))
      .add("peak_bytes", peak_memory_json());
  write_file_atomic(run_dir_ + "/summary.json", s.dump() + "\n");
}

// Checks of the model keys that the schema's per-key bounds cannot make.
void check_gpt_config(const Config& c) {
  const int64_t d = c.get_int("model.d_model"), h = c.get_int("model.n_head");
  KBIT_USER_CHECK(d % h == 0, c.origin("model.d_model"),
                  ": model.d_model: expected a multiple of model.n_head (", h,
                  "), got ", d);
  KBIT_USER_CHECK(c.get_int("train.max_steps") > 0, c.origin("train.max_steps"),
                  ": train.max_steps: expected an integer >= 1 for model.type "
                  "gpt (the schedule's length), got 0");
}

}  // namespace

GPTConfig gpt_config_from(const Config& c) {
  GPTConfig g;
  g.vocab_size = kVocab;
  g.block_size = c.get_int("model.block_size");
  g.n_layer = c.get_int("model.n_layer");
  g.n_head = c.get_int("model.n_head");
  g.d_model = c.get_int("model.d_model");
  g.mlp_ratio = c.get_int("model.mlp_ratio");
  g.stable_embedding = c.get_bool("model.stable_embedding");
  return g;
}

GptRunSummary train_gpt(const Config& config, const RunOptions& options) {
  const Clock::time_point start = Clock::now();
  KBIT_CHECK(config.get_string("model.type") == "gpt",
             "[train_gpt] expected model.type gpt, got ",
             config.get_string("model.type"));
  check_gpt_config(config);
  TextSplit data = load_data(config, config.get_int("model.block_size"));
  GptRun run(config, options, std::move(data), start);
  return run.run();
}

}  // namespace kbit
