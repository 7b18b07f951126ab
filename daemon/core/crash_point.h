#pragma once
// Crash points, compiled into test builds only (CMake option
// CRM_WORKER_CRASH_POINTS). With CRM_WORKER_CRASH_AT=<name> in the
// environment the process SIGKILLs itself the Nth time it reaches that point
// (N = CRM_WORKER_CRASH_AFTER, default 1), so a test can prove that a crash
// in each window loses and doubles nothing. In release builds this is a
// no-op the compiler removes.
//
// CRM_WORKER_HANG_AT=<name> instead makes the thread stop there (the Nth
// time, likewise): for good, a hung loop for the watchdog's test, or for
// CRM_WORKER_HANG_MS milliseconds, a stall (longer than the consumer's
// max.poll.interval.ms, say) after which the thread goes on.
//
// CRM_WORKER_CRASH_ON_EVENT=<prefix> makes the process SIGKILL itself every
// time it has decoded an event whose id starts with <prefix>: a message
// that kills the worker whenever it is applied (crash_on_event).
//
// Points: after_poll, before_db_commit, after_db_commit,
// after_dead_letter_row, in_drain, after_followup_sending,
// after_sendgrid_call, after_sync_claim, after_hubspot_upsert.

#include <string_view>

#ifdef CRM_WORKER_CRASH_POINTS
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>
#endif

namespace crm {

inline void crash_point([[maybe_unused]] const char* name) {
#ifdef CRM_WORKER_CRASH_POINTS
  static const char* crash_at = std::getenv("CRM_WORKER_CRASH_AT");
  static const char* hang_at = std::getenv("CRM_WORKER_HANG_AT");
  const bool crash = crash_at != nullptr && std::strcmp(crash_at, name) == 0;
  const bool hang = hang_at != nullptr && std::strcmp(hang_at, name) == 0;
  if (!crash && !hang) return;
  static std::atomic<long> remaining = [] {
    const char* n = std::getenv("CRM_WORKER_CRASH_AFTER");
    long v = n ? std::strtol(n, nullptr, 10) : 1;
    return v < 1 ? 1L : v;
  }();
  if (--remaining != 0) return;
  if (crash) std::raise(SIGKILL);
  if (const char* ms = std::getenv("CRM_WORKER_HANG_MS")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::strtol(ms, nullptr, 10)));
    return;
  }
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
#endif
}

inline void crash_on_event([[maybe_unused]] std::string_view event_id) {
#ifdef CRM_WORKER_CRASH_POINTS
  static const char* prefix = std::getenv("CRM_WORKER_CRASH_ON_EVENT");
  if (prefix != nullptr && *prefix != '\0' && event_id.starts_with(prefix)) std::raise(SIGKILL);
#endif
}

}  // namespace crm
