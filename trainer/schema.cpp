// The config schema: every key a config may hold, in one table.
//
// To add a key, add a row: path, type, default (as YAML text), bounds or
// choices, and a one-line doc. Sections ("optim", "train") are implied by
// the paths. Validation, defaults, --set, the printed table and the saved
// resolved.yaml all follow this table; nothing else lists keys.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/error.h"
#include "trainer/config.h"

// Rows leave KeySpec::required (map_list keys only) out.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace kbit {
namespace {

using T = KeyType;
constexpr Bound at_least(double v) {
  return Bound{v, false};
}
constexpr Bound above(double v) {
  return Bound{v, true};
}
constexpr Bound below(double v) {
  return Bound{v, true};
}
constexpr Bound at_most(double v) {
  return Bound{v, false};
}

// Quantization block sizes: the powers of two 32..4096, or 0 (the default
// of the state bits).
const std::vector<std::string> kBlockSizes = {
    "0", "32", "64", "128", "256", "512", "1024", "2048", "4096"};

std::vector<KeySpec> make_schema() {
  return {
      // path, type, default, min, max, choices, doc
      {"name",
       T::name,
       "",
       {},
       {},
       {},
       "run name, the folder under runs/ (default: the config file's stem)"},
      {"seed",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "seed of every random stream (init, shuffling, dropout)"},

      {"model.type",
       T::choice,
       "mlp",
       {},
       {},
       {"mlp", "gpt"},
       "model family (mlp: a classifier; gpt: a byte-level language model)"},
      {"model.hidden",
       T::int_list,
       "[1024, 1024]",
       at_least(1),
       {},
       {},
       "hidden layer widths ([] = a linear classifier)"},
      {"model.activation",
       T::choice,
       "relu",
       {},
       {},
       {"relu", "gelu"},
       "activation after each hidden layer"},
      {"model.dropout",
       T::number,
       "0.0",
       at_least(0),
       below(1),
       {},
       "dropout probability after each hidden activation"},
      {"model.n_layer",
       T::integer,
       "4",
       at_least(1),
       {},
       {},
       "gpt: transformer blocks"},
      {"model.n_head",
       T::integer,
       "4",
       at_least(1),
       {},
       {},
       "gpt: attention heads per block (model.d_model must divide by it)"},
      {"model.d_model",
       T::integer,
       "128",
       at_least(1),
       {},
       {},
       "gpt: width of the residual stream"},
      {"model.block_size",
       T::integer,
       "128",
       at_least(1),
       {},
       {},
       "gpt: context length T in bytes (training window)"},
      {"model.mlp_ratio",
       T::integer,
       "4",
       at_least(1),
       {},
       {},
       "gpt: MLP hidden width as a multiple of model.d_model"},
      {"model.stable_embedding",
       T::boolean,
       "false",
       {},
       {},
       {},
       "gpt: token table as a StableEmbedding (LayerNorm after the lookup)"},

      {"data.dataset",
       T::choice,
       "fashion_mnist",
       {},
       {},
       {"fashion_mnist", "kjv", "text"},
       "dataset (mlp: fashion_mnist; gpt: kjv, or text for any file)"},
      {"data.path",
       T::string,
       "\"\"",
       {},
       {},
       {},
       "the dataset's folder or file; \"\" = its default (fashion_mnist: "
       "/usr/share/datasets/fashion-mnist; kjv: ${KBIT_CACHE:-~/.cache/kbit}"
       "/kjv, made by scripts/prepare_kjv.sh)"},
      {"data.limit",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "use only the first N training examples (0 = all)"},

      {"optim.name",
       T::choice,
       "adamw",
       {},
       {},
       {"sgd", "adam", "adamw", "rmsprop", "adagrad", "lion", "lamb", "lars"},
       "optimizer"},
      {"optim.lr", T::number, "0.001", above(0), {}, {}, "peak learning rate"},
      {"optim.weight_decay",
       T::number,
       "0.0",
       at_least(0),
       {},
       {},
       "weight decay (decoupled for adamw, L2 for sgd and adam)"},
      {"optim.momentum",
       T::number,
       "0.9",
       at_least(0),
       below(1),
       {},
       "sgd momentum"},
      {"optim.nesterov",
       T::boolean,
       "false",
       {},
       {},
       {},
       "sgd: Nesterov momentum"},
      {"optim.beta1",
       T::number,
       "0.9",
       at_least(0),
       below(1),
       {},
       "first-moment decay (adam, adamw, lamb, lion)"},
      {"optim.beta2",
       T::number,
       "0.999",
       at_least(0),
       below(1),
       {},
       "second-moment decay (adam, adamw, lamb; lion's momentum decay)"},
      {"optim.eps",
       T::number,
       "1e-08",
       above(0),
       {},
       {},
       "denominator epsilon (adam, adamw, lamb, rmsprop, adagrad)"},
      {"optim.alpha",
       T::number,
       "0.99",
       at_least(0),
       below(1),
       {},
       "rmsprop: smoothing of the squared-gradient average"},
      {"optim.max_trust_ratio",
       T::number,
       "10.0",
       above(0),
       {},
       {},
       "lamb: largest trust ratio ||p|| / ||u||"},
      {"optim.max_unorm",
       T::number,
       "0.02",
       at_least(0),
       {},
       {},
       "lars: limit of ||u|| / ||p|| (0 = off)"},
      {"optim.bits",
       T::integer,
       "32",
       {},
       {},
       {"32", "8", "4"},
       "optimizer state bits (8 and 4: blockwise-quantized states)"},
      {"optim.block_size",
       T::integer,
       "0",
       {},
       {},
       kBlockSizes,
       "elements per quantization block (0 = 256 at 8 bits, 128 at 4)"},
      {"optim.map",
       T::choice,
       "dynamic",
       {},
       {},
       {"dynamic", "linear", "quantile"},
       "codebook of quantized states"},
      {"optim.blockwise",
       T::boolean,
       "true",
       {},
       {},
       {},
       "one absmax per block (false: one per tensor)"},
      {"optim.min_8bit_size",
       T::integer,
       "4096",
       at_least(0),
       {},
       {},
       "tensors with fewer elements keep 32-bit states"},
      {"optim.percentile_clipping",
       T::integer,
       "100",
       at_least(1),
       at_most(100),
       {},
       "clip gradients at this percentile of recent norms (100 = off)"},
      {"optim.overrides",
       T::map_list,
       "[]",
       {},
       {},
       {"bits", "block_size", "map", "blockwise", "min_8bit_size",
        "percentile_clipping", "weight_decay"},
       "per-parameter settings: [{pattern: \"*.bias\", bits: 32}, ...]; "
       "pattern: a glob (* and ?) on names; later entries win",
       "pattern"},
      {"optim.clip_grad_norm",
       T::number,
       "0.0",
       at_least(0),
       {},
       {},
       "clip the global gradient L2 norm to this (0 = off)"},

      {"train.epochs",
       T::integer,
       "10",
       at_least(1),
       {},
       {},
       "passes over the training set"},
      {"train.batch_size",
       T::integer,
       "128",
       at_least(1),
       {},
       {},
       "examples per step"},
      {"train.max_steps",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "stop after this many steps (mlp: 0 = run every epoch; gpt: the "
       "run's length, required)"},
      {"train.log_every",
       T::integer,
       "50",
       at_least(1),
       {},
       {},
       "steps between progress lines and metrics rows"},
      {"train.checkpoint_every",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "steps between checkpoints (0 = only at the end)"},
      {"train.stop_at_step",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "stop after this step with a checkpoint, schedule unchanged (0 = off)"},
      {"train.schedule",
       T::choice,
       "cosine",
       {},
       {},
       {"constant", "cosine"},
       "learning-rate schedule after warmup"},
      {"train.warmup_steps",
       T::integer,
       "0",
       at_least(0),
       {},
       {},
       "linear warmup from 0 to optim.lr over this many steps"},
      {"train.min_lr_ratio",
       T::number,
       "0.0",
       at_least(0),
       at_most(1),
       {},
       "cosine: final learning rate as a fraction of optim.lr"},
      {"train.eval_every_epochs",
       T::integer,
       "1",
       at_least(1),
       {},
       {},
       "epochs between test-set evaluations (and one at the end)"},
      {"train.grad_accum",
       T::integer,
       "1",
       at_least(1),
       {},
       {},
       "gpt: micro-batches of train.batch_size summed into each step"},
      {"train.eval_every",
       T::integer,
       "250",
       at_least(0),
       {},
       {},
       "gpt: steps between evaluations on the fixed validation sample "
       "(0 = only the final one)"},
      {"train.eval_batches",
       T::integer,
       "2",
       at_least(1),
       {},
       {},
       "gpt: batches of train.batch_size windows in the fixed validation "
       "sample"},
      {"train.max_seconds",
       T::number,
       "0",
       at_least(0),
       {},
       {},
       "gpt: stop at the first step past this many seconds of training, "
       "with a checkpoint (0 = off)"},
  };
}

std::string format_bound(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string describe_range(const KeySpec& spec) {
  if (spec.min && spec.max) {
    return str(" in ", spec.min->open ? "(" : "[",
               format_bound(spec.min->value), ", ",
               format_bound(spec.max->value), spec.max->open ? ")" : "]");
  }
  if (spec.min) {
    return str(spec.min->open ? " > " : " >= ", format_bound(spec.min->value));
  }
  if (spec.max) {
    return str(spec.max->open ? " < " : " <= ", format_bound(spec.max->value));
  }
  return "";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i ? ", " : "") + items[i];
  }
  return out;
}

}  // namespace

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> schema = make_schema();
  return schema;
}

const KeySpec* find_key_spec(const std::string& path) {
  for (const KeySpec& spec : config_schema()) {
    if (spec.path == path) return &spec;
  }
  return nullptr;
}

std::string describe_expected(const KeySpec& spec) {
  switch (spec.type) {
    case KeyType::integer:
      if (!spec.choices.empty()) return "one of " + join(spec.choices);
      return "an integer" + describe_range(spec);
    case KeyType::number:
      return "a number" + describe_range(spec);
    case KeyType::boolean:
      return "true or false";
    case KeyType::string:
      return "a string";
    case KeyType::name:
      return "a name of letters, digits, '.', '-' and '_'";
    case KeyType::choice:
      return "one of " + join(spec.choices);
    case KeyType::int_list:
      return "a list of integers" + describe_range(spec);
    case KeyType::existing_dir:
      return "an existing directory";
    case KeyType::existing_file:
      return "an existing file";
    case KeyType::map_list:
      return "a list of mappings, each with " + spec.required + " and any of " +
             join(spec.choices);
  }
  return "?";
}

int edit_distance(const std::string& a, const std::string& b) {
  // One row of the Levenshtein table at a time: row[j] = d(a[0:i], b[0:j]).
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = int(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = int(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      int up = row[j];
      int substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({up + 1, row[j - 1] + 1, substitute});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace kbit
