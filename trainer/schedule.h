// Learning-rate schedules: linear warmup, then constant or cosine decay.
#pragma once

#include <cstdint>

namespace kbit {

struct LrSchedule {
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;  // lr rises linearly over these steps
  int64_t total_steps = 1;   // warmup included
  bool cosine = true;        // false: constant after warmup
  double min_lr_ratio = 0;   // cosine ends at peak_lr * min_lr_ratio

  // The lr of update number step + 1 (step counts from 0):
  //   warmup:  peak * (step + 1) / warmup_steps
  //   cosine:  min + (peak - min) * (1 + cos(pi * t)) / 2,
  //            t = (step - warmup) / (total - warmup) in [0, 1)
  double at(int64_t step) const;
};

}  // namespace kbit
