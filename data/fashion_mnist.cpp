// IDX gzip reader. An IDX file is a big-endian header (magic, then one u32
// per dimension) followed by u8 data: magic 2051 for images (N, rows,
// cols), 2049 for labels (N).
#include "data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace kbit {
namespace {

constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr int64_t kRows = 28, kCols = 28;
constexpr int kClasses = 10;
// More items than any split holds: a larger count means a corrupt header,
// refused before it turns into a huge allocation.
constexpr int64_t kMaxCount = int64_t(1) << 24;

void check_count(const std::string& path, int64_t n) {
  KBIT_USER_CHECK(n <= kMaxCount, "[fashion_mnist] '", path,
                  "': expected at most ", kMaxCount, " items, got ", n,
                  " (corrupt header?)");
}

// A gzip file opened for reading, closed on scope exit.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    KBIT_USER_CHECK(file_ != nullptr, "[fashion_mnist] cannot open '", path,
                    "': missing or unreadable (install the Debian package "
                    "dataset-fashion-mnist, or set data.path)");
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads exactly n bytes or throws, naming what was being read.
  void read(void* out, size_t n, const char* what) {
    size_t got = 0;
    while (got < n) {
      unsigned chunk = unsigned(std::min<size_t>(n - got, 1u << 30));
      int r = gzread(file_, static_cast<char*>(out) + got, chunk);
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw UserError(str("[fashion_mnist] corrupt gzip data in '", path_,
                            "' while reading ", what, ": ", msg));
      }
      if (r == 0) break;
      got += size_t(r);
    }
    KBIT_USER_CHECK(got == n, "[fashion_mnist] '", path_,
                    "' is truncated: expected ", n, " bytes of ", what,
                    ", got ", got);
  }

  // Reads one big-endian u32. The first read also checks the gzip header.
  uint32_t read_u32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    KBIT_USER_CHECK(!gzdirect(file_), "[fashion_mnist] '", path_,
                    "' is not a gzip file");
    return uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 |
           uint32_t(b[3]);
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

void check_magic(GzFile& f, uint32_t expected) {
  uint32_t magic = f.read_u32("the magic number");
  KBIT_USER_CHECK(magic == expected, "[fashion_mnist] '", f.path(),
                  "' has a bad magic number: expected ", expected, ", got ",
                  magic);
}

// images (N, 784) f32 in [0, 1].
Tensor read_images(const std::string& path) {
  GzFile f(path);
  check_magic(f, kImagesMagic);
  int64_t n = f.read_u32("the image count");
  check_count(path, n);
  int64_t rows = f.read_u32("the row count");
  int64_t cols = f.read_u32("the column count");
  KBIT_USER_CHECK(rows == kRows && cols == kCols, "[fashion_mnist] '", path,
                  "': expected 28 x 28 images, got ", rows, " x ", cols);

  std::vector<uint8_t> bytes(size_t(n * rows * cols));
  f.read(bytes.data(), bytes.size(), "pixels");
  Tensor images =
      Tensor::empty({n, rows * cols}, DType::f32, MemTag::workspace);
  float* out = images.data<float>();
  int64_t total = int64_t(bytes.size());
#pragma omp parallel for if (total > (1 << 15))
  for (int64_t i = 0; i < total; ++i) {
    out[i] = float(bytes[size_t(i)]) * (1.0f / 255.0f);
  }
  return images;
}

// labels (N) i32 in [0, 10).
Tensor read_labels(const std::string& path) {
  GzFile f(path);
  check_magic(f, kLabelsMagic);
  int64_t n = f.read_u32("the label count");
  check_count(path, n);

  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.read(bytes.data(), bytes.size(), "labels");
  Tensor labels = Tensor::empty({n}, DType::i32, MemTag::workspace);
  int32_t* out = labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    int label = bytes[size_t(i)];
    KBIT_USER_CHECK(label < kClasses, "[fashion_mnist] '", path, "': label ", i,
                    " is ", label, ", expected one in [0, 10)");
    out[i] = label;
  }
  return labels;
}

}  // namespace

ImageDataset load_fashion_mnist(const std::string& dir,
                                const std::string& split) {
  KBIT_USER_CHECK(split == "train" || split == "test",
                  "[fashion_mnist] expected split train or test, got '", split,
                  "'");
  std::string prefix = dir + "/" + (split == "train" ? "train" : "t10k");
  std::string images_path = prefix + "-images-idx3-ubyte.gz";
  std::string labels_path = prefix + "-labels-idx1-ubyte.gz";

  ImageDataset ds;
  ds.images = read_images(images_path);
  ds.labels = read_labels(labels_path);
  KBIT_USER_CHECK(ds.images.shape(0) == ds.labels.shape(0),
                  "[fashion_mnist] expected as many labels as images, got ",
                  ds.images.shape(0), " images in '", images_path, "' and ",
                  ds.labels.shape(0), " labels in '", labels_path, "'");
  return ds;
}

}  // namespace kbit
