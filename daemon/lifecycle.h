#pragma once
// Process lifecycle: signals and systemd notifications.
//
// Signals: SIGTERM/SIGINT request a drain, SIGHUP a reload. They are blocked
// in every thread (call block_signals() before starting any thread) and
// received by one dedicated thread with sigwait(), which only sets flags:
// the consume loop reads them between messages.
//
// sd_notify: READY=1 once the database and a Kafka assignment are there,
// STOPPING=1 when the drain starts, WATCHDOG=1 from the consume loop as it
// makes progress, so a hung loop stops the pings and systemd restarts us.
// Without NOTIFY_SOCKET these are no-ops.

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace crm {

class Lifecycle {
 public:
  // Blocks SIGTERM, SIGINT, SIGHUP in the calling thread (and so in every
  // thread started afterwards).
  static void block_signals();

  Lifecycle();
  ~Lifecycle();
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  bool stop_requested() const { return stop_.load(); }
  void request_stop() { stop_.store(true); }
  // True once per SIGHUP.
  bool take_reload() { return reload_.exchange(false); }

  void notify_ready();
  void notify_stopping();
  void notify_status(const std::string& status);
  // Pings the watchdog, at most every half watchdog interval.
  void watchdog_ping();

 private:
  void signal_loop();

  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_{false};
  std::atomic<bool> quit_{false};
  bool ready_sent_ = false;
  std::chrono::microseconds watchdog_interval_{0};
  std::chrono::steady_clock::time_point last_ping_{};
  std::thread thread_;
};

}  // namespace crm
