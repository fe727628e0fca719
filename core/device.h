// Devices. The core is device-free: a tensor names its device, and kernels
// are chosen from it through one dispatch point (kernels/dispatch.h).
#pragma once

#include <cstdint>

namespace kbit {

enum class Device : uint8_t { cpu, cuda };

inline const char* device_name(Device d) {
  return d == Device::cpu ? "cpu" : "cuda";
}

}  // namespace kbit
