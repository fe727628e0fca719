// Text loading, the train/validation split and window sampling.
#include "data/text.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace kbit {
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::error_code ec;
  KBIT_USER_CHECK(fs::exists(path, ec), "text ", path, ": not found");
  KBIT_USER_CHECK(fs::is_regular_file(path, ec), "text ", path,
                  ": expected a regular file or a corpus folder");
  std::ifstream in(path, std::ios::binary);
  KBIT_USER_CHECK(in, "text ", path, ": cannot read (", std::strerror(errno),
                  ")");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  KBIT_USER_CHECK(!in.bad(), "text ", path, ": cannot read (",
                  std::strerror(errno), ")");
  KBIT_USER_CHECK(!bytes.empty(), "text ", path, ": empty (0 bytes)");
  return bytes;
}

void check_window(const std::vector<uint8_t>& data, const std::string& what,
                  int64_t block_size) {
  KBIT_USER_CHECK(int64_t(data.size()) >= block_size + 1, "text ", what,
                  ": expected at least ", block_size + 1,
                  " bytes (one window of model.block_size + 1), got ",
                  data.size());
}

// Where validation starts in a single file of n bytes: the first line start
// at or after n - n/10, else that point itself.
size_t split_point(const std::vector<uint8_t>& bytes) {
  const size_t n = bytes.size();
  const size_t cut = n - size_t(double(n) * kTextValFraction);
  for (size_t p = cut; p < n; ++p) {
    if (p > 0 && bytes[p - 1] == '\n') return p;
  }
  return cut;
}

void ensure_batch(Tensor& t, int64_t B, int64_t T) {
  if (t.defined() && t.dtype() == DType::i32 && t.dim() == 2 &&
      t.shape(0) == B && t.shape(1) == T && t.is_contiguous()) {
    return;
  }
  t = Tensor::empty({B, T}, DType::i32, MemTag::workspace);
}

}  // namespace

std::string kjv_corpus_dir() {
  const char* cache = std::getenv("KBIT_CACHE");
  if (cache && *cache) return std::string(cache) + "/kjv";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/kbit/kjv";
}

TextSplit load_text(const std::string& path, int64_t block_size) {
  KBIT_CHECK(block_size >= 1, "[load_text] expected block_size >= 1, got ",
             block_size);
  std::error_code ec;
  TextSplit s;
  if (fs::is_directory(path, ec)) {
    s.train = read_bytes(path + "/train.txt");
    s.val = read_bytes(path + "/val.txt");
    s.origin = path + "/{train,val}.txt";
    check_window(s.train, path + "/train.txt", block_size);
    check_window(s.val, path + "/val.txt", block_size);
    return s;
  }
  std::vector<uint8_t> bytes = read_bytes(path);
  const size_t cut = split_point(bytes);
  s.val.assign(bytes.begin() + std::ptrdiff_t(cut), bytes.end());
  bytes.resize(cut);
  s.train = std::move(bytes);
  s.origin = path;
  check_window(s.train, path + " (training part, the first 90%)", block_size);
  check_window(s.val, path + " (validation part, the last 10%)", block_size);
  return s;
}

void copy_window(const std::vector<uint8_t>& data, int64_t offset, int64_t T,
                 int64_t row, Tensor& idx, Tensor& targets) {
  const uint8_t* src = data.data() + offset;
  int32_t* x = idx.data<int32_t>() + row * T;
  int32_t* y = targets.data<int32_t>() + row * T;
  for (int64_t t = 0; t < T; ++t) {
    x[t] = src[t];
    y[t] = src[t + 1];
  }
}

void sample_batch(const std::vector<uint8_t>& data, int64_t B, int64_t T,
                  Philox& rng, Tensor& idx, Tensor& targets) {
  KBIT_CHECK(B >= 1 && T >= 1, "[sample_batch] expected B, T >= 1, got ", B,
             ", ", T);
  KBIT_CHECK(int64_t(data.size()) >= T + 1, "[sample_batch] expected at ",
             "least T + 1 = ", T + 1, " bytes, got ", data.size());
  ensure_batch(idx, B, T);
  ensure_batch(targets, B, T);
  // Offsets in [0, starts): floor(u * starts / 2^32) for a 32-bit word u.
  const uint64_t starts = uint64_t(data.size()) - uint64_t(T);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t offset = int64_t((uint64_t(rng.next_u32()) * starts) >> 32);
    copy_window(data, offset, T, b, idx, targets);
  }
}

}  // namespace kbit
