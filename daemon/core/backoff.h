#pragma once
// Capped exponential backoff with jitter: attempt 0 waits about `initial`,
// each further attempt doubles it, never beyond `max`. `unit` is a random
// number in [0, 1) supplied by the caller (so tests need no clock and no
// randomness); the delay is drawn from [cap/2, cap], which keeps several
// instances from retrying in lockstep without ever collapsing to a tight
// loop the way full jitter's [0, cap] can.

#include <algorithm>
#include <cstdint>

#include "daemon/core/time.h"

namespace crm {

inline Millis backoff_delay(int attempt, Millis initial, Millis max, double unit) {
  const std::int64_t base = std::max<std::int64_t>(initial.count(), 1);
  const int shift = std::clamp(attempt, 0, 40);
  std::int64_t cap = max.count();
  if (shift < 62 && base <= (cap >> shift)) cap = base << shift;
  cap = std::max<std::int64_t>(cap, 1);
  unit = std::clamp(unit, 0.0, 1.0);
  return Millis{cap / 2 + static_cast<std::int64_t>((cap - cap / 2) * unit)};
}

}  // namespace crm
