// The MLP training loop (see train_mlp.h for what it writes and when).
//
// B batch size, D = 784 pixels, K = 10 classes.
#include "trainer/train_mlp.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <vector>

#include "autograd/engine.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/philox.h"
#include "data/fashion_mnist.h"
#include "models/mlp.h"
#include "optim/optimizer.h"
#include "trainer/checkpoint.h"
#include "trainer/report.h"
#include "trainer/run_dir.h"
#include "trainer/schedule.h"

namespace kbit {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kEvalBatch = 1000;  // test rows per forward pass
// The data and dropout streams are disjoint stretches of the seed's Philox
// stream, far apart (2^60 words), so they never overlap the init stream.
constexpr uint64_t kDataStreamOffset = uint64_t(1) << 60;
constexpr uint64_t kDropoutStreamOffset = uint64_t(2) << 60;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Data {
  ImageDataset train;  // images (N, D), labels (N)
  ImageDataset test;
  int64_t n_train = 0;  // the first n_train rows of train are used
};

Data load_data(const Config& config) {
  KBIT_USER_CHECK(config.get_string("data.dataset") == "fashion_mnist",
                  config.origin("data.dataset"),
                  ": data.dataset: expected fashion_mnist for model.type mlp, "
                  "got ",
                  config.get_string("data.dataset"));
  std::string dir = config.get_string("data.path");
  if (dir.empty()) dir = kFashionMnistDir;
  std::error_code ec;
  KBIT_USER_CHECK(
      std::filesystem::is_directory(dir, ec), config.origin("data.path"),
      ": data.path: expected an existing directory, got '", dir, "'");
  Data data;
  try {
    data.train = load_fashion_mnist(dir, "train");
    data.test = load_fashion_mnist(dir, "test");
  } catch (const UserError& e) {
    throw UserError(config.origin("data.path") + ": data.path: " + e.what());
  }
  const int64_t n = data.train.images.shape(0);
  const int64_t limit = config.get_int("data.limit");
  KBIT_USER_CHECK(limit <= n, config.origin("data.limit"),
                  ": data.limit: expected at most ", n,
                  " (the training set's size), got ", limit);
  data.n_train = limit > 0 ? limit : n;
  return data;
}

// Fisher-Yates with Philox words; j = floor(u * (i + 1)) for a 32-bit u.
// Draws exactly order.size() - 1 words.
void shuffle(std::vector<int64_t>& order, Philox& rng) {
  for (size_t i = order.size(); i-- > 1;) {
    size_t j = size_t((uint64_t(rng.next_u32()) * (i + 1)) >> 32);
    std::swap(order[i], order[j]);
  }
}

// The training order of epoch `epoch` (1-based): a pure function of (seed,
// epoch), so a resumed run needs no data-stream state. Epoch e reads the
// data stream from word (e - 1) * (n - 1) on, where one running stream
// would be after e - 1 shuffles.
void epoch_order(std::vector<int64_t>& order, uint64_t seed, int64_t epoch) {
  const uint64_t words = order.empty() ? 0 : order.size() - 1;
  Philox rng(seed, kDataStreamOffset + uint64_t(epoch - 1) * words);
  std::iota(order.begin(), order.end(), int64_t(0));
  shuffle(order, rng);
}

// Whether glob `p` ('*' any run of characters, '?' one) matches all of
// `s`: the optimizer's override patterns.
bool glob_match(const char* p, const char* s) {
  const char* star = nullptr;  // the last '*' seen, and where it resumed
  const char* resume = nullptr;
  while (*s) {
    if (*p == '*') {
      star = p++;
      resume = s;
    } else if (*p == '?' || *p == *s) {
      ++p, ++s;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return false;
    }
  }
  while (*p == '*') ++p;
  return *p == '\0';
}

// Rows order[begin, end) of ds: x (B, D) f32 and y (B) i32.
std::pair<Tensor, Tensor> gather(const ImageDataset& ds,
                                 const std::vector<int64_t>& order,
                                 int64_t begin, int64_t end) {
  const int64_t b = end - begin, d = ds.images.shape(1);
  Tensor x = Tensor::empty({b, d});
  Tensor y = Tensor::empty({b}, DType::i32);
  const float* src = ds.images.data<float>();
  const int32_t* labels = ds.labels.data<int32_t>();
  float* xp = x.data<float>();
  int32_t* yp = y.data<int32_t>();
  for (int64_t r = 0; r < b; ++r) {
    const int64_t row = order[size_t(begin + r)];
    std::copy_n(src + row * d, d, xp + r * d);
    yp[r] = labels[row];
  }
  return {x, y};
}

// Rows whose largest logit is at the label. logits (B, K), labels (B).
int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  const std::vector<float> z = logits.to_vector<float>();
  const std::vector<int32_t> y = labels.to_vector<int32_t>();
  const size_t k = size_t(logits.shape(1));
  int64_t correct = 0;
  for (size_t r = 0; r < y.size(); ++r) {
    auto row = z.begin() + std::ptrdiff_t(r * k);
    correct += (std::max_element(row, row + std::ptrdiff_t(k)) - row) == y[r];
  }
  return correct;
}

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

EvalResult evaluate(MLP& model, const ImageDataset& test, Philox& rng) {
  NoGradGuard no_grad;
  model.train(false);
  const int64_t n = test.images.shape(0);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t b = 0; b < n; b += kEvalBatch) {
    const int64_t e = std::min(n, b + kEvalBatch);
    Tensor x = test.images.slice_view(0, b, e);  // (B, D)
    Tensor y = test.labels.slice_view(0, b, e);  // (B)
    Tensor logits = model.forward(x, rng);       // (B, K)
    loss_sum += cross_entropy(logits, y).item() * double(e - b);
    correct += count_correct(logits, y);
  }
  model.train(true);
  return {loss_sum / double(n), double(correct) / double(n)};
}

OptimConfig optim_config(const Config& c) {
  OptimConfig o;
  o.name = c.get_string("optim.name");
  o.lr = c.get_double("optim.lr");
  o.weight_decay = c.get_double("optim.weight_decay");
  o.momentum = c.get_double("optim.momentum");
  o.nesterov = c.get_bool("optim.nesterov");
  o.beta1 = c.get_double("optim.beta1");
  o.beta2 = c.get_double("optim.beta2");
  o.eps = c.get_double("optim.eps");
  o.alpha = c.get_double("optim.alpha");
  o.bits = int(c.get_int("optim.bits"));
  o.block_size = int(c.get_int("optim.block_size"));
  o.map = c.get_string("optim.map");
  o.blockwise = c.get_bool("optim.blockwise");
  o.min_8bit_size = c.get_int("optim.min_8bit_size");
  o.percentile_clipping = int(c.get_int("optim.percentile_clipping"));
  o.clip_grad_norm = c.get_double("optim.clip_grad_norm");
  o.max_trust_ratio = c.get_double("optim.max_trust_ratio");
  o.max_unorm = c.get_double("optim.max_unorm");
  for (const ConfigMap& m : c.get_map_list("optim.overrides")) {
    OptimOverride v;
    auto field = [&](const char* key) -> const ScalarValue* {
      auto it = m.fields.find(key);
      return it == m.fields.end() ? nullptr : &it->second;
    };
    v.pattern = std::get<std::string>(*field("pattern"));
    if (auto* f = field("bits")) v.bits = int(std::get<int64_t>(*f));
    if (auto* f = field("block_size")) {
      v.block_size = int(std::get<int64_t>(*f));
    }
    if (auto* f = field("map")) v.map = std::get<std::string>(*f);
    if (auto* f = field("blockwise")) v.blockwise = std::get<bool>(*f);
    if (auto* f = field("min_8bit_size")) {
      v.min_8bit_size = std::get<int64_t>(*f);
    }
    if (auto* f = field("percentile_clipping")) {
      v.percentile_clipping = int(std::get<int64_t>(*f));
    }
    if (auto* f = field("weight_decay")) v.weight_decay = std::get<double>(*f);
    o.overrides.push_back(std::move(v));
  }
  return o;
}

// The optimizer's own message ("optim.bits: expected ...") prefixed with
// where that key was set; "optim.overrides[i]...." with entry i's line.
std::string with_origin(const Config& c, const std::string& message) {
  const std::string key = message.substr(0, message.find(':'));
  const std::string prefix = "optim.overrides[";
  if (key.rfind(prefix, 0) == 0) {
    const size_t i = std::stoul(key.substr(prefix.size()));
    const auto overrides = c.get_map_list("optim.overrides");
    if (i < overrides.size()) return overrides[i].origin + ": " + message;
  }
  if (find_key_spec(key)) return c.origin(key) + ": " + message;
  return c.path() + ": " + message;
}

std::unique_ptr<Optimizer> build_optimizer(const Config& c,
                                           std::vector<NamedTensor> params) {
  check_override_patterns(c, params);
  const OptimConfig o = optim_config(c);
  try {
    validate_optim_config(o);
    return make_optimizer(std::move(params), o);
  } catch (const UserError& e) {
    throw UserError(with_origin(c, e.what()));
  }
}

MLPConfig mlp_config(const Config& c) {
  MLPConfig m;
  m.hidden = c.get_int_list("model.hidden");
  m.activation = c.get_string("model.activation");
  m.dropout = c.get_double("model.dropout");
  return m;
}

// One run, from loaded data to summary.json.
class MlpRun {
 public:
  MlpRun(const Config& config, const RunOptions& options, Data data,
         Clock::time_point start);
  RunSummary run();

 private:
  void open_run_dir();
  void restore();
  void save_checkpoint() const;
  // After a step or an epoch's evaluation: checkpoint when due; true when
  // train.stop_at_step says to stop here.
  bool checkpoint_or_stop();
  RunSummary summary(const std::string& status) const;
  void train_step(const std::vector<int64_t>& order, int64_t begin,
                  int64_t end);
  void log_window();
  void run_eval();
  void stop_on_non_finite(double loss);
  void write_summary(const std::string& status) const;
  double epoch() const { return double(step_) / double(steps_per_epoch_); }
  double wall_seconds() const { return wall_before_ + seconds_since(start_); }
  void emit(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  const Config& config_;
  RunOptions options_;
  Data data_;
  Clock::time_point start_;
  Philox data_rng_, dropout_rng_;
  std::unique_ptr<MLP> model_;
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  int64_t batch_size_, steps_per_epoch_, total_steps_, log_every_;
  int64_t checkpoint_every_, stop_at_step_;
  int64_t step_ = 0;        // steps done
  double wall_before_ = 0;  // seconds run before a resume

  std::string run_dir_;
  std::unique_ptr<MetricsCsv> metrics_;
  // The logging window: steps since the last progress line.
  double window_loss_ = 0;
  int64_t window_steps_ = 0, window_samples_ = 0;
  Clock::time_point window_start_;
  double last_window_loss_ = NAN;
  EvalResult last_eval_{NAN, NAN};
  int64_t last_eval_step_ = -1;
};

MlpRun::MlpRun(const Config& config, const RunOptions& options, Data data,
               Clock::time_point start)
    : config_(config),
      options_(options),
      data_(std::move(data)),
      start_(start),
      data_rng_(uint64_t(config.get_int("seed")), kDataStreamOffset),
      dropout_rng_(uint64_t(config.get_int("seed")), kDropoutStreamOffset),
      batch_size_(config.get_int("train.batch_size")),
      log_every_(config.get_int("train.log_every")) {
  Philox init_rng(uint64_t(config.get_int("seed")));
  model_ = std::make_unique<MLP>(mlp_config(config), init_rng);
  optimizer_ = build_optimizer(config, model_->named_parameters());
  checkpoint_every_ = config.get_int("train.checkpoint_every");
  stop_at_step_ = config.get_int("train.stop_at_step");

  steps_per_epoch_ = (data_.n_train + batch_size_ - 1) / batch_size_;
  total_steps_ = config.get_int("train.epochs") * steps_per_epoch_;
  if (int64_t max_steps = config.get_int("train.max_steps"); max_steps > 0) {
    total_steps_ = std::min(total_steps_, max_steps);
  }
  schedule_.peak_lr = config.get_double("optim.lr");
  schedule_.warmup_steps = config.get_int("train.warmup_steps");
  schedule_.total_steps = total_steps_;
  schedule_.cosine = config.get_string("train.schedule") == "cosine";
  schedule_.min_lr_ratio = config.get_double("train.min_lr_ratio");
}

RunSummary MlpRun::run() {
  // A resume checks its checkpoint first: a bad one gives one message.
  if (!options_.resume.empty()) restore();
  std::string table = config_.table();
  table.pop_back();  // the last newline
  emit("config " + config_.path() + "\n" + table);
  open_run_dir();

  const int64_t eval_every = config_.get_int("train.eval_every_epochs");
  const uint64_t seed = uint64_t(config_.get_int("seed"));
  std::vector<int64_t> order(size_t(data_.n_train));
  window_start_ = Clock::now();
  // A resumed run starts inside epoch step_ / steps_per_epoch_ + 1.
  for (int64_t e = step_ / steps_per_epoch_ + 1; step_ < total_steps_; ++e) {
    epoch_order(order, seed, e);
    const int64_t first = step_ - (e - 1) * steps_per_epoch_;
    for (int64_t b = first * batch_size_;
         b < data_.n_train && step_ < total_steps_; b += batch_size_) {
      train_step(order, b, std::min(data_.n_train, b + batch_size_));
      const bool epoch_end = b + batch_size_ >= data_.n_train;
      if (!epoch_end && step_ < total_steps_ && checkpoint_or_stop()) {
        return summary("stopped");
      }
    }
    if (e % eval_every == 0) run_eval();
    if (step_ < total_steps_ && checkpoint_or_stop()) {
      return summary("stopped");
    }
  }
  if (last_eval_step_ != step_) run_eval();
  save_checkpoint();
  return summary("completed");
}

void MlpRun::open_run_dir() {
  if (!options_.resume.empty()) {
    run_dir_ = options_.resume;
    emit(str("run folder: ", run_dir_, " (resumed at step ", step_, ")"));
    metrics_ = MetricsCsv::resume(run_dir_ + "/metrics.csv", step_);
    return;
  }
  // Everything is checked: from here on the run folder exists.
  run_dir_ = create_run_dir(config_.get_string("name"), options_.out);
  emit("run folder: " + run_dir_);
  write_file_atomic(run_dir_ + "/resolved.yaml", config_.to_yaml());
  metrics_ = std::make_unique<MetricsCsv>(run_dir_ + "/metrics.csv");
}

void MlpRun::restore() {
  const std::string path = options_.resume + "/checkpoint.bin";
  const Checkpoint c = read_checkpoint(path);
  // The run's shape: another value means another schedule or data order.
  c.expect_counters(path,
                    {{"total_steps", total_steps_},
                     {"steps_per_epoch", steps_per_epoch_},
                     {"batch_size", batch_size_},
                     {"n_train", data_.n_train}},
                    "config", "config");
  load_parameters(path, c, model_->named_parameters());
  load_optimizer_state(*optimizer_, c.optimizer_state, path);

  step_ = c.counter(path, "step");
  KBIT_USER_CHECK(step_ >= 0 && step_ <= total_steps_, "checkpoint ", path,
                  ": step ", step_, " is outside [0, ", total_steps_, "]");
  dropout_rng_.set_offset(uint64_t(c.counter(path, "rng.dropout")));
  window_steps_ = c.counter(path, "window.steps");
  window_samples_ = c.counter(path, "window.samples");
  last_eval_step_ = c.counter(path, "last_eval.step");
  window_loss_ = c.real(path, "window.loss");
  last_window_loss_ = c.real(path, "last_window_loss");
  last_eval_ = {c.real(path, "last_eval.loss"),
                c.real(path, "last_eval.accuracy")};
  wall_before_ = c.real(path, "wall_seconds");
}

void MlpRun::save_checkpoint() const {
  CheckpointMeta m;
  m.config_text = config_.to_yaml();
  m.counters = {{"step", step_},
                {"total_steps", total_steps_},
                {"steps_per_epoch", steps_per_epoch_},
                {"batch_size", batch_size_},
                {"n_train", data_.n_train},
                {"rng.dropout", int64_t(dropout_rng_.offset())},
                {"window.steps", window_steps_},
                {"window.samples", window_samples_},
                {"last_eval.step", last_eval_step_}};
  m.reals = {{"window.loss", window_loss_},
             {"last_window_loss", last_window_loss_},
             {"last_eval.loss", last_eval_.loss},
             {"last_eval.accuracy", last_eval_.accuracy},
             {"wall_seconds", wall_seconds()}};
  kbit::save_checkpoint(run_dir_ + "/checkpoint.bin", m,
                        model_->named_parameters(),
                        save_optimizer_state(*optimizer_));
}

bool MlpRun::checkpoint_or_stop() {
  const bool stop = stop_at_step_ > 0 && step_ == stop_at_step_;
  if (stop || (checkpoint_every_ > 0 && step_ % checkpoint_every_ == 0)) {
    save_checkpoint();
  }
  return stop;
}

RunSummary MlpRun::summary(const std::string& status) const {
  write_summary(status);
  RunSummary s;
  s.run_dir = run_dir_;
  s.test_accuracy = last_eval_.accuracy;
  s.test_loss = last_eval_.loss;
  s.final_train_loss = last_window_loss_;
  s.param_count = model_->parameter_count();
  s.optimizer_state_bytes = optimizer_->state_bytes();
  s.steps = step_;
  s.skipped_steps = optimizer_->skipped_steps();
  s.wall_seconds = wall_seconds();
  s.status = status;
  return s;
}

void MlpRun::train_step(const std::vector<int64_t>& order, int64_t begin,
                        int64_t end) {
  auto [x, y] = gather(data_.train, order, begin, end);  // (B, D), (B)
  optimizer_->set_lr(schedule_.at(step_));
  Tensor logits = model_->forward(x, dropout_rng_);  // (B, K)
  Tensor loss = cross_entropy(logits, y);
  const double value = loss.item();
  if (!std::isfinite(value)) stop_on_non_finite(value);

  optimizer_->zero_grad();
  backward(loss);
  optimizer_->step();

  ++step_;
  window_loss_ += value;
  ++window_steps_;
  window_samples_ += end - begin;
  if (step_ % log_every_ == 0 || step_ == total_steps_) log_window();
}

void MlpRun::log_window() {
  const double seconds = seconds_since(window_start_);
  TrainProgress p;
  p.step = step_;
  p.total_steps = total_steps_;
  p.epoch = epoch();
  p.loss = window_loss_ / double(window_steps_);
  p.lr = optimizer_->lr();
  p.ms_per_step = 1e3 * seconds / double(window_steps_);
  p.samples_per_s = double(window_samples_) / std::max(seconds, 1e-9);
  p.eta_seconds = 1e-3 * p.ms_per_step * double(total_steps_ - step_);
  p.optim_state_bytes = optimizer_->state_bytes();
  p.skipped_steps = optimizer_->skipped_steps();
  emit(format_progress(p));
  metrics_->write(MetricsRow{
      step_, p.epoch, p.loss, p.lr, p.ms_per_step, p.samples_per_s, {}, {}});

  last_window_loss_ = p.loss;
  window_loss_ = 0;
  window_steps_ = window_samples_ = 0;
  window_start_ = Clock::now();
}

void MlpRun::run_eval() {
  const Clock::time_point t0 = Clock::now();
  last_eval_ = evaluate(*model_, data_.test, dropout_rng_);
  last_eval_step_ = step_;
  emit(format_eval(EvalProgress{step_, total_steps_, epoch(), last_eval_.loss,
                                last_eval_.accuracy, seconds_since(t0)}));
  metrics_->write(MetricsRow{step_,
                             epoch(),
                             {},
                             optimizer_->lr(),
                             {},
                             {},
                             last_eval_.loss,
                             last_eval_.accuracy});
  window_start_ += Clock::now() - t0;  // evaluation is not training time
}

void MlpRun::stop_on_non_finite(double loss) {
  metrics_->write(
      MetricsRow{step_ + 1, epoch(), loss, optimizer_->lr(), {}, {}, {}, {}});
  write_summary("non_finite_loss");
  throw UserError(
      non_finite_loss_message(step_ + 1, loss, optimizer_->lr(), run_dir_));
}

void MlpRun::write_summary(const std::string& status) const {
  const int64_t params = model_->parameter_count();
  const int64_t state = optimizer_->state_bytes();
  JsonObject s;
  s.add("name", config_.get_string("name"))
      .add("config", config_.path())
      .add("status", status)
      .add("test_accuracy", last_eval_.accuracy)
      .add("test_loss", last_eval_.loss)
      .add("final_train_loss", last_window_loss_)
      .add("param_count", params)
      .add("optimizer_state_bytes", state)
      .add("optimizer_state_bytes_per_param", double(state) / double(params))
      .add("steps", step_)
      .add("total_steps", total_steps_)
      .add("skipped_steps", optimizer_->skipped_steps())
      .add("epochs", epoch())
      .add("wall_seconds", wall_seconds())
      .add("peak_bytes", peak_memory_json());
  write_file_atomic(run_dir_ + "/summary.json", s.dump() + "\n");
}

}  // namespace

std::unique_ptr<Optimizer> build_module_optimizer(const Config& config,
                                                  const Module& model) {
  check_override_patterns(config, model.named_parameters());
  const OptimConfig o = optim_config(config);
  try {
    validate_optim_config(o);
    return make_optimizer(model, o);
  } catch (const UserError& e) {
    throw UserError(with_origin(config, e.what()));
  }
}

const std::vector<std::string>& resume_override_keys() {
  static const std::vector<std::string> keys = {
      "train.checkpoint_every", "train.stop_at_step", "data.path",
      "train.max_seconds"};
  return keys;
}

Config load_resume_config(const std::string& run_dir,
                          const std::vector<std::string>& overrides) {
  const std::string path = run_dir + "/resolved.yaml";
  std::error_code ec;
  KBIT_USER_CHECK(std::filesystem::is_regular_file(path, ec), "--resume ",
                  run_dir, ": expected a run folder with resolved.yaml, ",
                  "got none");
  const auto& keys = resume_override_keys();
  std::vector<std::string> all = {"train.stop_at_step=0"};
  for (const std::string& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      std::string valid;
      for (const std::string& k : keys)
        valid += (valid.empty() ? "" : ", ") + k;
      throw UserError("--set " + o + ": " + key +
                      ": cannot change on --resume (it would change the "
                      "run); keys that can: " +
                      valid);
    }
    all.push_back(o);
  }
  return Config::load(path, all);
}

void check_override_patterns(const Config& config,
                             const std::vector<NamedTensor>& params) {
  const std::vector<ConfigMap> overrides =
      config.get_map_list("optim.overrides");
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string pattern =
        std::get<std::string>(overrides[i].fields.at("pattern"));
    bool matched = false;
    for (const auto& np : params) {
      matched = matched || glob_match(pattern.c_str(), np.first.c_str());
    }
    if (matched) continue;
    constexpr size_t kShown = 12;  // names listed before "..."
    std::string names;
    for (size_t k = 0; k < params.size() && k < kShown; ++k) {
      names += (k ? ", " : "") + params[k].first;
    }
    if (params.size() > kShown) names += str(", ... (", params.size(), ")");
    throw UserError(str(overrides[i].origin, ": optim.overrides[", i,
                        "].pattern: '", pattern, "' matches no parameter; ",
                        "parameters are ", names));
  }
}

RunSummary train_mlp(const Config& config, const RunOptions& options) {
  const Clock::time_point start = Clock::now();
  KBIT_CHECK(config.get_string("model.type") == "mlp",
             "[train_mlp] expected model.type mlp, got ",
             config.get_string("model.type"));
  Data data = load_data(config);
  MlpRun run(config, options, std::move(data), start);
  return run.run();
}

}  // namespace kbit
