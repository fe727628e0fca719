#include "core/storage.h"

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "core/error.h"

namespace kbit {
namespace {

struct Counters {
  std::atomic<int64_t> live{0};
  std::atomic<int64_t> peak{0};
};
std::array<Counters, kNumMemTags> g_counters;

void account(MemTag tag, int64_t delta) {
  Counters& c = g_counters[size_t(tag)];
  int64_t now = c.live.fetch_add(delta) + delta;
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}

// A training step allocates and frees the same large activation buffers
// every step. By default glibc serves large blocks with fresh mmaps and
// hands freed memory at the top of the heap back to the kernel, so every
// step faults in and zeroes all its activation pages again: 12-15% of the
// CPU time of a GPT training step (bench_gpt, one thread, perf). Blocks up
// to glibc's largest mmap threshold (32 MiB on 64-bit) now come from the
// heap, and freed heap memory stays in the process for reuse.
bool keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}

}  // namespace

const char* mem_tag_name(MemTag tag) {
  switch (tag) {
    case MemTag::param:
      return "param";
    case MemTag::grad:
      return "grad";
    case MemTag::optim_state:
      return "optim_state";
    case MemTag::activation:
      return "activation";
    case MemTag::workspace:
      return "workspace";
    case MemTag::count:
      break;
  }
  return "?";
}

MemStats memory_stats(MemTag tag) {
  const Counters& c = g_counters[size_t(tag)];
  return {c.live.load(), c.peak.load()};
}

void reset_peak_memory() {
  for (Counters& c : g_counters) c.peak.store(c.live.load());
}

Storage::Storage(size_t nbytes, MemTag tag, Device device)
    : nbytes_(nbytes), tag_(tag), device_(device) {
  KBIT_CHECK(device == Device::cpu,
             "[storage] device allocations go through the CUDA backend; "
             "this build allocates only on cpu, got ",
             device_name(device));
  static const bool tuned = keep_freed_memory();
  (void)tuned;
  size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  data_ = std::aligned_alloc(kAlignment, rounded);
  if (!data_) throw std::bad_alloc();
  account(tag_, int64_t(nbytes_));
}

Storage::~Storage() {
  std::free(data_);
  account(tag_, -int64_t(nbytes_));
}

void Storage::retag(MemTag tag) {
  if (tag == tag_) return;
  account(tag_, -int64_t(nbytes_));
  tag_ = tag;
  account(tag_, int64_t(nbytes_));
}

}  // namespace kbit
