// Fashion-MNIST reader: the real test split from the Debian package, and
// the errors for missing and corrupt files.
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/fashion_mnist.h"

using namespace kbit;
namespace fs = std::filesystem;

namespace {

// The message of the UserError that f throws ("" if none).
template <typename F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("kbit_fmnist_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_gz(const fs::path& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) ==
          int(bytes.size()));
  gzclose(f);
}

std::vector<unsigned char> be32(uint32_t x) {
  return {(unsigned char)(x >> 24), (unsigned char)(x >> 16),
          (unsigned char)(x >> 8), (unsigned char)x};
}

std::vector<unsigned char> cat(std::vector<std::vector<unsigned char>> parts) {
  std::vector<unsigned char> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

// Skipped (and reported as skipped) without the Debian package
// dataset-fashion-mnist.
const bool kNoDataset = !fs::exists(kFashionMnistDir);

TEST_CASE("fashion_mnist: the real test split" * doctest::skip(kNoDataset)) {
  ImageDataset ds = load_fashion_mnist(kFashionMnistDir, "test");
  REQUIRE(ds.images.shape() == Shape{10000, 784});
  REQUIRE(ds.labels.shape() == Shape{10000});
  CHECK(ds.images.dtype() == DType::f32);
  CHECK(ds.labels.dtype() == DType::i32);

  const float* px = ds.images.data<float>();
  auto [lo, hi] = std::minmax_element(px, px + ds.images.numel());
  CHECK(*lo == 0.0f);
  CHECK(*hi == 1.0f);  // some pixel is 255

  std::array<int, 10> histogram{};
  for (int32_t y : ds.labels.to_vector<int32_t>()) {
    if (y < 0 || y >= 10) FAIL("label out of range: ", y);
    ++histogram[size_t(y)];
  }
  for (int c = 0; c < 10; ++c) CHECK_MESSAGE(histogram[size_t(c)] == 1000, c);
}

TEST_CASE("fashion_mnist: the real train split" * doctest::skip(kNoDataset)) {
  ImageDataset ds = load_fashion_mnist(kFashionMnistDir, "train");
  CHECK(ds.images.shape() == Shape{60000, 784});
  CHECK(ds.labels.shape() == Shape{60000});
  std::array<int, 10> histogram{};
  for (int32_t y : ds.labels.to_vector<int32_t>()) {
    if (y < 0 || y >= 10) FAIL("label out of range: ", y);
    ++histogram[size_t(y)];
  }
  for (int c = 0; c < 10; ++c) CHECK_MESSAGE(histogram[size_t(c)] == 6000, c);
}

TEST_CASE("fashion_mnist: errors name the file and the problem") {
  TempDir tmp;
  std::string dir = tmp.path.string();
  std::string images = dir + "/t10k-images-idx3-ubyte.gz";
  std::string labels = dir + "/t10k-labels-idx1-ubyte.gz";

  std::string e =
      user_error([&] { load_fashion_mnist(dir + "/nope", "test"); });
  CHECK(contains(e, "cannot open '" + dir + "/nope/t10k-images"));
  e = user_error([&] { load_fashion_mnist(dir, "valid"); });
  CHECK(contains(e, "expected split train or test, got 'valid'"));

  // Not gzip at all.
  std::ofstream(images) << "hello, this is not gzip";
  e = user_error([&] { load_fashion_mnist(dir, "test"); });
  CHECK(contains(e, "'" + images + "' is not a gzip file"));

  // Labels magic where images belong.
  write_gz(images, cat({be32(2049), be32(2)}));
  e = user_error([&] { load_fashion_mnist(dir, "test"); });
  CHECK(contains(e, "'" + images +
                        "' has a bad magic number: expected 2051, "
                        "got 2049"));

  // Truncated pixels.
  write_gz(images, cat({be32(2051), be32(2), be32(28), be32(28),
                        std::vector<unsigned char>(100, 7)}));
  e = user_error([&] { load_fashion_mnist(dir, "test"); });
  CHECK(contains(e, "'" + images + "' is truncated: expected 1568 bytes"));

  // Good images, but three labels for two images.
  write_gz(images, cat({be32(2051), be32(2), be32(28), be32(28),
                        std::vector<unsigned char>(1568, 255)}));
  write_gz(labels, cat({be32(2049), be32(3), {1, 2, 3}}));
  e = user_error([&] { load_fashion_mnist(dir, "test"); });
  CHECK(contains(e, "expected as many labels as images, got 2 images"));

  // A label out of range.
  write_gz(labels, cat({be32(2049), be32(2), {1, 12}}));
  e = user_error([&] { load_fashion_mnist(dir, "test"); });
  CHECK(contains(e, "label 1 is 12, expected one in [0, 10)"));

  // And a well-formed pair loads.
  write_gz(labels, cat({be32(2049), be32(2), {1, 9}}));
  ImageDataset ds = load_fashion_mnist(dir, "test");
  CHECK(ds.images.shape() == Shape{2, 784});
  CHECK(ds.images.at({1, 783}) == 1.0);
  CHECK(ds.labels.to_vector<int32_t>() == std::vector<int32_t>{1, 9});
}
