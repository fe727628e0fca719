// Checkpoints: one binary file with everything a run needs to continue bit
// for bit (DESIGN.md section 8), generic over the model.
//
// Layout (little-endian; u64 = uint64_t, str = u64 length + bytes):
//   "KBITCKPT"              8 bytes of magic
//   u32 version             kCheckpointVersion
//   u32 flags               0
//   u64 body_bytes          the bytes from here to the checksum
//   body:
//     str config_text       the resolved config (Config::to_yaml)
//     u64 n, n x (str name, i64 value)     counters (step, rng offsets...)
//     u64 n, n x (str name, u64 bits)      reals, as their f64 bit patterns
//     u64 n, n x tensor     the parameters, in the model's order:
//                             str name, u8 dtype, u32 ndim, ndim x i64 dims,
//                             u64 nbytes, the raw bytes
//     str optimizer_state   Optimizer::save_state, as written
//   u64 checksum            FNV-1a 64 over every byte before it
//
// The file is written with write_file_atomic (temporary file, fsync, rename,
// folder fsync), so a crash while writing leaves the previous checkpoint
// whole (KBIT_TEST_KILL_IN_CHECKPOINT, a test hook in checkpoint.cpp, makes
// such a crash happen on purpose). Reading verifies magic, version, length and
// checksum before it believes anything; a bad file is a UserError "checkpoint
// PATH: ..." (exit code 2 in the tools).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "models/module.h"

namespace kbit {

class Optimizer;

constexpr uint32_t kCheckpointVersion = 1;

// What the trainer keeps besides parameters and optimizer state.
struct CheckpointMeta {
  std::string config_text;
  std::map<std::string, int64_t> counters;  // "step", "rng.data", ...
  std::map<std::string, double> reals;      // exact (stored as bit patterns)
};

struct CheckpointTensor {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  std::string bytes;  // raw, row-major
};

struct Checkpoint {
  CheckpointMeta meta;
  std::vector<CheckpointTensor> tensors;
  std::string optimizer_state;

  // counters.at / reals.at with a UserError naming the file and the key.
  int64_t counter(const std::string& path, const std::string& key) const;
  double real(const std::string& path, const std::string& key) const;
  // Each counter `key` must equal its `value` in this run, else a UserError
  // "checkpoint PATH: KEY is S in the checkpoint but V in the SOURCE; resume
  // needs the run's own NEEDS".
  void expect_counters(
      const std::string& path,
      const std::vector<std::pair<std::string, int64_t>>& expected,
      const std::string& source, const std::string& needs) const;
};

// Optimizer::save_state as the checkpoint's optimizer blob.
std::string save_optimizer_state(const Optimizer& optimizer);
// Optimizer::load_state from that blob; a UserError names the checkpoint.
void load_optimizer_state(Optimizer& optimizer, const std::string& blob,
                          const std::string& path);

// The file's bytes for `meta`, the (contiguous) `params` and the optimizer
// blob. Throws kbit::Error for a non-contiguous parameter.
std::string encode_checkpoint(const CheckpointMeta& meta,
                              const std::vector<NamedTensor>& params,
                              const std::string& optimizer_state);

// Writes encode_checkpoint(...) to `path` atomically.
void save_checkpoint(const std::string& path, const CheckpointMeta& meta,
                     const std::vector<NamedTensor>& params,
                     const std::string& optimizer_state);

// Decodes and verifies `bytes` (read from `path`, used in messages).
Checkpoint decode_checkpoint(const std::string& path, const std::string& bytes);
// Reads and verifies `path`. UserError for a missing, truncated or
// corrupted file.
Checkpoint read_checkpoint(const std::string& path);

// Copies the checkpoint's tensors into `params` (same names, in any order;
// same dtypes and shapes). A parameter missing from either side or of
// another shape is a UserError naming it and both shapes; nothing is copied
// unless everything matches.
void load_parameters(const std::string& path, const Checkpoint& checkpoint,
                     const std::vector<NamedTensor>& params);

// FNV-1a 64 of `n` bytes (the checkpoint checksum).
uint64_t fnv1a64(const void* data, size_t n);

}  // namespace kbit
