// Learning-rate schedules (see schedule.h for the formulas).
#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace kbit {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) {
    return peak_lr * double(step + 1) / double(warmup_steps);
  }
  if (!cosine) return peak_lr;
  const double min_lr = peak_lr * min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t =
      std::min(1.0, double(step - warmup_steps) / double(decay_steps));
  return min_lr +
         (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
}

}  // namespace kbit
