// Storage: one tagged allocation, and the accounting of live and peak bytes
// per tag, so a run reports its memory from real allocations.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/device.h"

namespace kbit {

enum class MemTag : uint8_t {
  param,
  grad,
  optim_state,
  activation,
  workspace,
  count
};
constexpr int kNumMemTags = int(MemTag::count);

const char* mem_tag_name(MemTag tag);

struct MemStats {
  int64_t live = 0;
  int64_t peak = 0;
};

// Live and peak bytes of one tag (thread-safe).
MemStats memory_stats(MemTag tag);
// Sets every tag's peak to its live bytes.
void reset_peak_memory();

// Memory is 64-byte aligned so SIMD loads never straddle cache lines.
constexpr size_t kAlignment = 64;

// Host buffers of at least kHugePageMin bytes are aligned to 2 MiB and asked
// to use transparent huge pages (madvise; Linux only, a hint the kernel may
// ignore). Streaming kernels over 10^8 elements then take about 500x fewer
// TLB misses, which hide less of the compute in the compute-bound 8-bit
// optimizer steps.
constexpr size_t kHugePageMin = size_t(4) << 20;
// nbytes (> 0) of kAlignment-aligned host memory; throws std::bad_alloc.
void* host_alloc(size_t nbytes);
void host_free(void* p);

class Storage {
 public:
  Storage(size_t nbytes, MemTag tag, Device device = Device::cpu);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  MemTag tag() const { return tag_; }
  Device device() const { return device_; }
  // Moves the bytes to another tag's account (a grad becoming a param...).
  void retag(MemTag tag);

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  MemTag tag_;
  Device device_;
};

}  // namespace kbit
