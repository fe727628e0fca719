// Checkpoint files: an exact round trip of every byte, and a clear
// UserError "checkpoint PATH: ..." for every kind of bad file (missing,
// foreign, truncated anywhere, one flipped byte anywhere, another model).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "trainer/checkpoint.h"
#include "trainer/temp_dir.h"

using namespace kbit;
using kbit::test::read_text;
using kbit::test::TempDir;

namespace {

std::vector<NamedTensor> make_params(int64_t out, uint64_t seed) {
  Philox rng(seed);
  return {{"fc0.weight", Tensor::randn({out, 5}, rng)},
          {"fc0.bias", Tensor::randn({out}, rng)},
          {"fc1.weight", Tensor::randn({3, out}, rng)}};
}

CheckpointMeta make_meta() {
  CheckpointMeta m;
  m.config_text = "seed: 0\noptim:\n  bits: 8\n";
  m.counters = {{"step", 42}, {"rng.dropout", int64_t(1) << 61}};
  m.reals = {{"loss", 0.1 + 0.2}, {"nan", NAN}, {"neg0", -0.0}};
  return m;
}

// An optimizer blob with every byte value, as raw codes would be.
std::string make_blob() {
  std::string s;
  for (int i = 0; i < 777; ++i) s += char(i * 37 % 256);
  return s;
}

std::string error_of(const std::string& path, const std::string& bytes) {
  try {
    decode_checkpoint(path, bytes);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(decoded)";
}

bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

TEST_CASE("checkpoint: save and read back every byte exactly") {
  TempDir dir;
  const std::string path = dir / "checkpoint.bin";
  const auto params = make_params(4, 1);
  save_checkpoint(path, make_meta(), params, make_blob());
  CHECK_FALSE(std::filesystem::exists(dir / ".checkpoint.bin.tmp"));

  Checkpoint c = read_checkpoint(path);
  CHECK(c.meta.config_text == make_meta().config_text);
  CHECK(c.meta.counters == make_meta().counters);
  CHECK(same_bits(c.real(path, "loss"), 0.1 + 0.2));
  CHECK(std::isnan(c.real(path, "nan")));
  CHECK(same_bits(c.real(path, "neg0"), -0.0));
  CHECK(c.optimizer_state == make_blob());
  REQUIRE(c.tensors.size() == 3);
  CHECK(c.tensors[2].name == "fc1.weight");
  CHECK(c.tensors[2].shape == Shape{3, 4});

  // Loading into another model of the same shape copies every bit.
  const auto other = make_params(4, 2);
  load_parameters(path, c, other);
  for (size_t i = 0; i < params.size(); ++i) {
    CHECK(std::memcmp(other[i].second.raw_data(), params[i].second.raw_data(),
                      params[i].second.nbytes()) == 0);
  }
  // The same contents give the same bytes (no padding, no timestamps).
  CHECK(encode_checkpoint(make_meta(), params, make_blob()) == read_text(path));

  CHECK(c.counter(path, "step") == 42);
  CHECK_THROWS_WITH_AS(
      c.counter(path, "epoch"),
      ("checkpoint " + path + ": expected the counter 'epoch', got none")
          .c_str(),
      UserError);
}

TEST_CASE("checkpoint: missing, foreign and wrong-version files") {
  TempDir dir;
  const std::string path = dir / "c.bin";
  CHECK_THROWS_WITH_AS(read_checkpoint(path),
                       ("checkpoint " + path + ": not found").c_str(),
                       UserError);
  CHECK(error_of(path, "hello world, not a checkpoint") ==
        "checkpoint " + path +
            ": not a kbit checkpoint (expected the magic KBITCKPT at the "
            "start)");
  std::string bytes = encode_checkpoint(make_meta(), make_params(4, 1), "");
  std::string v2 = bytes;
  v2[8] = 2;
  CHECK(error_of(path, v2) ==
        "checkpoint " + path + ": expected format version 1, got 2");
}

TEST_CASE("checkpoint: a truncated file is refused at every length") {
  const std::string path = "x/checkpoint.bin";
  const std::string bytes =
      encode_checkpoint(make_meta(), make_params(4, 1), make_blob());
  for (size_t n = 8; n < bytes.size(); n += 1 + n / 16) {
    const std::string e = error_of(path, bytes.substr(0, n));
    CAPTURE(n);
    CHECK(e.rfind("checkpoint " + path + ": truncated (", 0) == 0);
  }
  CHECK(error_of(path, bytes + "x") ==
        "checkpoint " + path +
            str(": corrupted (", bytes.size() + 1, " bytes, the header says ",
                bytes.size(), ")"));
}

TEST_CASE("checkpoint: one flipped byte anywhere is refused") {
  const std::string path = "c.bin";
  const std::string bytes =
      encode_checkpoint(make_meta(), make_params(4, 1), make_blob());
  for (size_t i = 0; i < bytes.size(); i += 1 + i / 32) {
    std::string bad = bytes;
    bad[i] = char(bad[i] ^ 0x10);
    CAPTURE(i);
    // Magic, version and length are named as such; the rest by checksum.
    CHECK(error_of(path, bad).rfind("checkpoint " + path + ": ", 0) == 0);
    CHECK(error_of(path, bad) != "(decoded)");
  }
  std::string bad = bytes;
  bad[bytes.size() / 2] ^= 1;
  CHECK(error_of(path, bad) ==
        "checkpoint " + path +
            ": corrupted (the checksum does not match the contents)");
}

TEST_CASE("checkpoint: another model's parameters are refused by name") {
  TempDir dir;
  const std::string path = dir / "c.bin";
  save_checkpoint(path, make_meta(), make_params(4, 1), "");
  const Checkpoint c = read_checkpoint(path);

  auto wider = make_params(6, 1);
  std::vector<float> before = wider[0].second.to_vector<float>();
  CHECK_THROWS_WITH_AS(load_parameters(path, c, wider),
                       ("checkpoint " + path +
                        ": parameter 'fc0.weight' is f32 (4, 5) in the "
                        "checkpoint but f32 (6, 5) in the model")
                           .c_str(),
                       UserError);
  CHECK(wider[0].second.to_vector<float>() == before);  // nothing copied

  auto renamed = make_params(4, 1);
  renamed[1].first = "fc0.b";
  CHECK_THROWS_WITH_AS(load_parameters(path, c, renamed),
                       ("checkpoint " + path +
                        ": has no parameter 'fc0.b' (the model's is (4,)); it "
                        "was written for another model")
                           .c_str(),
                       UserError);
  auto fewer = make_params(4, 1);
  fewer.pop_back();
  CHECK_THROWS_WITH_AS(load_parameters(path, c, fewer),
                       ("checkpoint " + path +
                        ": has parameter 'fc1.weight', which the model "
                        "lacks; it was written for another model")
                           .c_str(),
                       UserError);
}

TEST_CASE("checkpoint: FNV-1a 64 matches its published test values") {
  CHECK(fnv1a64("", 0) == 0xcbf29ce484222325ull);
  CHECK(fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
}
