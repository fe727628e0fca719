// The CUDA side of kernels/dispatch.h: device queries, memory, and a first
// trivial kernel (fill) that proves the toolchain and the dispatch work.
#include <cuda_runtime.h>

#include "kernels/dispatch.h"

#define KBIT_CUDA_CHECK(expr)                                            \
  do {                                                                   \
    cudaError_t err_ = (expr);                                           \
    if (err_ != cudaSuccess) {                                           \
      throw ::kbit::Error(                                               \
          ::kbit::str("CUDA error '", cudaGetErrorString(err_), "' in ", \
                      #expr, " at ", __FILE__, ":", __LINE__));          \
    }                                                                    \
  } while (0)

namespace kbit {

bool cuda_built() {
  return true;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

namespace cuda {
namespace {

__global__ void fill_kernel(float* out, long long n, float value) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

void require_device(const char* op) {
  if (cuda_device_count() == 0) {
    throw Error(str(op, ": built with CUDA, but no CUDA device is present"));
  }
}

}  // namespace

void fill(float* out, long long n, float value) {
  require_device("fill");
  if (n == 0) return;
  constexpr int kThreads = 256;
  long long blocks = (n + kThreads - 1) / kThreads;
  fill_kernel<<<(unsigned)blocks, kThreads>>>(out, n, value);
  KBIT_CUDA_CHECK(cudaGetLastError());
  KBIT_CUDA_CHECK(cudaDeviceSynchronize());
}

void* malloc_device(size_t nbytes) {
  require_device("malloc_device");
  void* p = nullptr;
  KBIT_CUDA_CHECK(cudaMalloc(&p, nbytes));
  return p;
}

void free_device(void* p) {
  KBIT_CUDA_CHECK(cudaFree(p));
}

void copy(void* dst, const void* src, size_t nbytes, bool host_to_device) {
  KBIT_CUDA_CHECK(cudaMemcpy(
      dst, src, nbytes,
      host_to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
}

}  // namespace cuda
}  // namespace kbit
