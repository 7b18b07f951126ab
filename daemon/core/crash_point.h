#pragma once
// Crash points, compiled into test builds only (CMake option
// CRM_WORKER_CRASH_POINTS). With CRM_WORKER_CRASH_AT=<name> in the
// environment the process SIGKILLs itself the Nth time it reaches that point
// (N = CRM_WORKER_CRASH_AFTER, default 1), so a test can prove that a crash
// in each window loses and doubles nothing. In release builds this is a
// no-op the compiler removes.
//
// Points: after_poll, before_db_commit, after_db_commit,
// after_dead_letter_row, in_drain.

#ifdef CRM_WORKER_CRASH_POINTS
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#endif

namespace crm {

inline void crash_point([[maybe_unused]] const char* name) {
#ifdef CRM_WORKER_CRASH_POINTS
  static const char* wanted = std::getenv("CRM_WORKER_CRASH_AT");
  if (wanted == nullptr || std::strcmp(wanted, name) != 0) return;
  static std::atomic<long> remaining = [] {
    const char* n = std::getenv("CRM_WORKER_CRASH_AFTER");
    long v = n ? std::strtol(n, nullptr, 10) : 1;
    return v < 1 ? 1L : v;
  }();
  if (--remaining == 0) std::raise(SIGKILL);
#endif
}

}  // namespace crm
