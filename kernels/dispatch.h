// The one dispatch point between device-free code and the backends.
//
// A kernel entry checks the tensor's device here; when the build has no
// CUDA backend, a cuda tensor gets "<op>: built without CUDA".
#pragma once

#include "core/device.h"
#include "core/error.h"

namespace kbit {

// True when this build has the CUDA backend compiled in.
bool cuda_built();
// Number of usable CUDA devices (0 without CUDA or without a GPU).
int cuda_device_count();
// Throws "<op>: built without CUDA" when asked for cuda in a CPU build.
void require_backend(Device device, const char* op);

namespace cuda {
// Trivial first kernel: out[i] = value for i < n, on device memory. Throws
// when the build has no CUDA backend or no GPU is present.
void fill(float* out, long long n, float value);
// Copies between host and device memory (kind: true = host to device).
void* malloc_device(size_t nbytes);
void free_device(void* p);
void copy(void* dst, const void* src, size_t nbytes, bool host_to_device);
}  // namespace cuda

}  // namespace kbit
