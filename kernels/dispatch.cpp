#include "kernels/dispatch.h"

namespace kbit {

#ifndef KBIT_HAVE_CUDA
bool cuda_built() {
  return false;
}
int cuda_device_count() {
  return 0;
}

namespace cuda {
[[noreturn]] static void no_cuda(const char* op) {
  throw Error(str(op, ": built without CUDA"));
}
void fill(float*, long long, float) {
  no_cuda("fill");
}
void* malloc_device(size_t) {
  no_cuda("malloc_device");
}
void free_device(void*) {
  no_cuda("free_device");
}
void copy(void*, const void*, size_t, bool) {
  no_cuda("copy");
}
}  // namespace cuda
#endif

void require_backend(Device device, const char* op) {
  if (device == Device::cuda && !cuda_built()) {
    throw Error(str(op, ": built without CUDA"));
  }
}

}  // namespace kbit
