// Fashion-MNIST from the IDX gzip files of the Debian package
// dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
//
// N images of 28 x 28 = 784 pixels. The loader reads the whole split into
// memory (tagged workspace); it does no batching or shuffling.
#pragma once

#include <string>

#include "core/tensor.h"

namespace kbit {

struct ImageDataset {
  Tensor images;  // (N, 784) f32, pixel / 255
  Tensor labels;  // (N) i32 in [0, 10)
};

// The default directory of the Debian package.
inline constexpr const char* kFashionMnistDir =
    "/usr/share/datasets/fashion-mnist";

// split "train" (60000) or "test" (10000) from the IDX gzip files in dir
// (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...).
// Throws UserError naming the file and what was wrong (missing, not gzip,
// bad magic, wrong sizes, counts that differ, truncated, bad label).
ImageDataset load_fashion_mnist(const std::string& dir,
                                const std::string& split);

}  // namespace kbit
