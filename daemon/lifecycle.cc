#include "daemon/lifecycle.h"

#include <pthread.h>
#include <signal.h>
#include <systemd/sd-daemon.h>

#include "daemon/logging.h"

namespace crm {
namespace {

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);  // internal: wakes the signal thread to quit
  return set;
}

}  // namespace

void Lifecycle::block_signals() {
  sigset_t set = handled_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Lifecycle::Lifecycle() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_interval_ = std::chrono::microseconds(usec);
  thread_ = std::thread([this] { signal_loop(); });
}

Lifecycle::~Lifecycle() {
  quit_.store(true);
  pthread_kill(thread_.native_handle(), SIGUSR2);
  thread_.join();
}

void Lifecycle::signal_loop() {
  sigset_t set = handled_signals();
  while (!quit_.load()) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) {
      if (stop_.exchange(true)) {
        log::warn("second stop signal; still draining");
      } else {
        log::info("stop requested, draining", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
      }
    } else if (sig == SIGHUP) {
      reload_.store(true);
    }
  }
}

void Lifecycle::notify_ready() {
  if (ready_sent_) return;
  ready_sent_ = true;
  sd_notify(0, "READY=1\nSTATUS=consuming");
  log::info("ready");
}

void Lifecycle::notify_stopping() { sd_notify(0, "STOPPING=1\nSTATUS=draining"); }

void Lifecycle::notify_status(const std::string& status) {
  sd_notify(0, ("STATUS=" + status).c_str());
}

void Lifecycle::watchdog_ping() {
  if (watchdog_interval_.count() == 0) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < watchdog_interval_ / 2) return;
  last_ping_ = now;
  sd_notify(0, "WATCHDOG=1");
}

}  // namespace crm
