// Byte-level text data for the GPT: a file (or a prepared corpus folder)
// read whole into memory, split once into train and validation bytes, and
// random windows drawn from the Philox stream.
//
// Tokens are bytes (vocabulary 256): any file works, UTF-8 or not. The
// default corpus (data.dataset kjv) is the King James Bible, prepared once
// by scripts/prepare_kjv.sh into kjv_corpus_dir() as train.txt and val.txt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/philox.h"
#include "core/tensor.h"

namespace kbit {

struct TextSplit {
  std::vector<uint8_t> train, val;
  std::string origin;  // what was read, for messages and the summary
};

// ${KBIT_CACHE:-$HOME/.cache/kbit}/kjv: where prepare_kjv.sh puts the KJV.
std::string kjv_corpus_dir();

// The fraction of a single file's bytes that becomes validation (its end).
inline constexpr double kTextValFraction = 0.1;

// `path` is either a text file (any bytes; its last 10% is validation, cut
// at the first line start at or after that point when there is one) or a
// prepared corpus folder holding train.txt and val.txt. Throws UserError
// "text PATH: ..." for a missing, unreadable or empty file, a folder
// without train.txt or val.txt, and a split shorter than one window of
// block_size + 1 bytes.
TextSplit load_text(const std::string& path, int64_t block_size);

// B random windows of T + 1 bytes from data, one offset per window, each
// uniform over [0, size - T - 1] from one word of rng (B words drawn):
// idx (B, T) i32 = window[0, T), targets (B, T) i32 = window[1, T].
// idx and targets are reused when already (B, T) i32 and contiguous.
// Throws Error when data holds fewer than T + 1 bytes.
void sample_batch(const std::vector<uint8_t>& data, int64_t B, int64_t T,
                  Philox& rng, Tensor& idx, Tensor& targets);

// The window starting at `offset` into row `row` of idx and targets (the
// same layout as sample_batch); the caller keeps offset + T + 1 in range.
void copy_window(const std::vector<uint8_t>& data, int64_t offset, int64_t T,
                 int64_t row, Tensor& idx, Tensor& targets);

}  // namespace kbit
