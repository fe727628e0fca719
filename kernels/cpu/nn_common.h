// Constants shared by the nn kernels (softmax, layernorm, cross_entropy,
// embedding, bias, dropout).
#pragma once

#include <cstdint>

namespace kbit::cpu {

// Below this many elements a loop runs on one thread, so small ops do not
// pay the OpenMP fork-join cost.
constexpr int64_t kParallelMinElements = int64_t(1) << 15;

// Rows of a reduction over rows are summed in at most this many fixed
// chunks (each chunk's partial sum kept separately, then added in order),
// so results do not depend on the number of threads.
constexpr int64_t kReduceChunks = 64;

}  // namespace kbit::cpu
