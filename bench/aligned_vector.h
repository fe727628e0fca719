// AlignedVec<T>: a std::vector whose memory is 64-byte aligned like kbit's
// tensor storage (core/storage.h). A large plain std::vector sits 16 bytes
// past a page boundary, so its 64-byte vector loads straddle cache lines and
// kernels skip their streaming-store paths, which tensors never do.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace kbit::bench {

template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const Aligned64&) const { return true; }
};

template <typename T>
using AlignedVec = std::vector<T, Aligned64<T>>;

}  // namespace kbit::bench
