#include "daemon/executor_loop.h"

#include <algorithm>
#include <chrono>

#include "daemon/core/backoff.h"
#include "daemon/core/stoppable.h"
#include "daemon/logging.h"

namespace crm {

void run_executor_loop(const std::atomic<bool>& stop, const ExecutorLoop& loop, std::mt19937_64& rng) {
  constexpr auto kReportEvery = std::chrono::seconds(5);
  auto last_report = std::chrono::steady_clock::time_point{};
  int failures = 0;
  while (!stop.load()) {
    if (std::chrono::steady_clock::now() - last_report >= kReportEvery) {
      if (Status s = loop.report(); s) last_report = std::chrono::steady_clock::now();
    }
    Result<bool> more = loop.step();
    if (!more) {
      if (failures++ % 10 == 0) {
        log::warn(std::string(loop.name) + ": database error, retrying",
                  {{"error", more.status().message()}});
      }
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      sleep_unless_stopped(stop, backoff_delay(std::min(failures, 6), Millis{250}, Millis{5000}, unit(rng)));
      continue;
    }
    failures = 0;
    if (*more) continue;
    loop.await(loop.idle_wait());
  }
}

}  // namespace crm
