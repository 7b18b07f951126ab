#pragma once
// The loop every queue executor runs on its own thread (follow-ups, HubSpot
// sync): publish its metrics every few seconds, do one step of work, back
// off while the database fails, and otherwise wait for the next due item or
// a NOTIFY.

#include <atomic>
#include <functional>
#include <random>

#include "daemon/core/status.h"
#include "daemon/core/time.h"

namespace crm {

struct ExecutorLoop {
  const char* name;                       // for logs: "follow-up executor"
  std::function<Status()> report;         // every 5 s (a failure is retried next time)
  std::function<Result<bool>()> step;     // one pass; true: more is ready now
  std::function<Millis()> idle_wait;      // nothing ready: how long until something may be
  std::function<void(Millis)> await;      // waits that long, or less when notified
};

// Runs until `stop` is set.
void run_executor_loop(const std::atomic<bool>& stop, const ExecutorLoop& loop, std::mt19937_64& rng);

}  // namespace crm
