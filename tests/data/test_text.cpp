// Text data: the train/validation split of one file and of a corpus
// folder, refusals that name the path, and window sampling from Philox.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "data/text.h"
#include "trainer/temp_dir.h"

using kbit::load_text;
using kbit::Philox;
using kbit::Tensor;
using kbit::TextSplit;
using kbit::test::TempDir;

namespace {

// "line 0 ...\nline 1 ...\n": n numbered lines of varying length.
std::string numbered_lines(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    text +=
        "line " + std::to_string(i) + std::string(size_t(i % 7), 'x') + "\n";
  }
  return text;
}

std::string as_string(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

std::string load_error(const std::string& path, int64_t block_size) {
  try {
    load_text(path, block_size);
  } catch (const kbit::UserError& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("text: one file splits at a line start near 90%") {
  TempDir dir;
  const std::string text = numbered_lines(500);
  const std::string path = dir.write("t.txt", text);
  TextSplit s = load_text(path, 8);
  CHECK(as_string(s.train) + as_string(s.val) == text);
  CHECK(s.train.back() == '\n');  // validation begins a line
  const size_t cut = text.size() - size_t(double(text.size()) * 0.1);
  CHECK(s.train.size() >= cut);
  CHECK(s.train.size() < cut + 16);  // the next line start, lines < 16
  CHECK(s.origin == path);

  // No newline after the 90% point: the cut is that point itself.
  const std::string flat(1000, 'a');
  s = load_text(dir.write("flat.txt", flat), 8);
  CHECK(s.train.size() == 900);
  CHECK(s.val.size() == 100);
}

TEST_CASE("text: a corpus folder holds train.txt and val.txt") {
  TempDir dir;
  dir.write("corpus/train.txt", numbered_lines(50));
  dir.write("corpus/val.txt", "the validation text\n");
  TextSplit s = load_text(dir / "corpus", 8);
  CHECK(as_string(s.train) == numbered_lines(50));
  CHECK(as_string(s.val) == "the validation text\n");

  dir.write("half/train.txt", numbered_lines(50));
  CHECK(load_error(dir / "half", 8) ==
        "text " + (dir / "half") + "/val.txt: not found");
}

TEST_CASE("text: missing, empty, too small and unreadable are refused") {
  TempDir dir;
  CHECK(load_error(dir / "nope.txt", 8) ==
        "text " + (dir / "nope.txt") + ": not found");
  const std::string empty = dir.write("empty.txt", "");
  CHECK(load_error(empty, 8) == "text " + empty + ": empty (0 bytes)");
  // 40 bytes: val gets 4, fewer than one window of T + 1 = 9.
  const std::string small = dir.write("small.txt", std::string(40, 'a'));
  CHECK(load_error(small, 8) ==
        "text " + small +
            " (validation part, the last 10%): expected at least 9 bytes "
            "(one window of model.block_size + 1), got 4");
  // Unreadable: root reads any file, so as root a child process drops to
  // the user nobody first.
  const std::string locked = dir.write("locked.txt", numbered_lines(50));
  ::chmod(locked.c_str(), 0);
  const std::string want = "text " + locked +
                           ": cannot read (Permission "
                           "denied)";
  if (::geteuid() != 0) {
    CHECK(load_error(locked, 8) == want);
  } else {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const bool dropped = ::setgid(65534) == 0 && ::setuid(65534) == 0;
      ::_exit(!dropped ? 2 : load_error(locked, 8) == want ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK_MESSAGE(WEXITSTATUS(status) == 0,
                  "exit 1: another message; exit 2: cannot become nobody");
  }
}

TEST_CASE("text: sample_batch cuts windows and their shifted targets") {
  std::vector<uint8_t> data;
  for (int i = 0; i < 300; ++i) data.push_back(uint8_t(i * 7 % 256));
  constexpr int64_t B = 5, T = 9;
  Philox rng(3, 100);
  Tensor idx, targets;
  kbit::sample_batch(data, B, T, rng, idx, targets);
  CHECK(rng.offset() == 100 + B);  // one word per window
  REQUIRE(idx.shape() == kbit::Shape{B, T});
  REQUIRE(targets.shape() == kbit::Shape{B, T});
  const std::vector<int32_t> x = idx.to_vector<int32_t>();
  const std::vector<int32_t> y = targets.to_vector<int32_t>();
  Philox again(3, 100);
  const uint64_t starts = data.size() - T;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = int64_t((uint64_t(again.next_u32()) * starts) >> 32);
    for (int64_t t = 0; t < T; ++t) {
      CHECK(x[size_t(b * T + t)] == data[size_t(o + t)]);
      CHECK(y[size_t(b * T + t)] == data[size_t(o + t + 1)]);
    }
  }

  // Exactly T + 1 bytes: every window is the whole text.
  std::vector<uint8_t> tiny(T + 1);
  for (int64_t i = 0; i <= T; ++i) tiny[size_t(i)] = uint8_t(i);
  kbit::sample_batch(tiny, 3, T, rng, idx, targets);
  CHECK(idx.to_vector<int32_t>()[size_t(2 * T)] == 0);
  CHECK(targets.to_vector<int32_t>()[size_t(3 * T - 1)] == int32_t(T));
  CHECK_THROWS_AS(kbit::sample_batch(tiny, 3, T + 1, rng, idx, targets),
                  kbit::Error);
}
