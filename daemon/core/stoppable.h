#pragma once
// Sleeping on the executors' threads without holding up a stop request.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "daemon/core/time.h"

namespace crm {

// Sleeps for `d`, or less once `stop` is set (seen within 50 ms).
inline void sleep_unless_stopped(const std::atomic<bool>& stop, Millis d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stop.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

}  // namespace crm
