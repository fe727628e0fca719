// AlignedVec<T>: a std::vector whose memory comes from kbit's host
// allocator (core/storage.h: 64-byte aligned, huge pages when large), as
// tensor storage does. A large plain std::vector sits 16 bytes past a page
// boundary, so its 64-byte vector loads straddle cache lines and kernels
// skip their streaming-store paths, which tensors never do.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#include "core/storage.h"

namespace kbit::bench {

template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(kbit::host_alloc(n * sizeof(T)));
  }
  void deallocate(T* p, size_t) { kbit::host_free(p); }
  bool operator==(const Aligned64&) const { return true; }
};

template <typename T>
using AlignedVec = std::vector<T, Aligned64<T>>;

}  // namespace kbit::bench
