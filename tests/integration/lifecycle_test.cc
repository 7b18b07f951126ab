// systemd integration: the sd_notify messages on a socket the test owns,
// and SIGHUP reloading the log level.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>

#include "tests/harness/harness.h"

namespace crm::test {
namespace {

// A NOTIFY_SOCKET of our own: collects every datagram the worker sends.
class NotifySocket {
 public:
  NotifySocket() {
    path_ = dir_.file("notify.sock");
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind");
    timeval tv{0, 100000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifySocket() { close(fd_); }
  const std::string& path() const { return path_; }
  // Reads what arrived so far (non-blocking beyond 100 ms) into messages_.
  const std::vector<std::string>& drain() {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd_, buf, sizeof buf, 0)) > 0) messages_.emplace_back(buf, static_cast<size_t>(n));
    return messages_;
  }
  bool seen(const std::string& needle) {
    for (const auto& m : drain()) {
      if (m.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  size_t count(const std::string& needle) {
    size_t c = 0;
    for (const auto& m : drain()) c += m.find(needle) != std::string::npos;
    return c;
  }

 private:
  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

// Guarantee: READY=1 only once the database and an assignment are there;
// WATCHDOG=1 keeps coming while the loop runs; STOPPING=1 on SIGTERM.
TEST(Lifecycle, NotifiesReadyWatchdogAndStopping) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  NotifySocket notify;
  WorkerProcess worker(db, broker.bootstrap(),
                       {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "400000"}});
  ASSERT_TRUE(wait_until([&] { return notify.seen("READY=1"); }, 30s)) << worker.process().log();
  // By then the readiness probe agrees.
  EXPECT_EQ(worker.http_get("/readyz").first, 200);
  EXPECT_NE(worker.process().log().find("partitions assigned"), std::string::npos);
  size_t pings = notify.count("WATCHDOG=1");
  ASSERT_TRUE(wait_until([&] { return notify.count("WATCHDOG=1") >= pings + 3; }, 10s));
  EXPECT_EQ(notify.count("READY=1"), 1u);
  worker.process().signal(SIGTERM);
  ASSERT_EQ(worker.process().wait(30s), 0) << worker.process().log();
  EXPECT_TRUE(notify.seen("STOPPING=1"));
}

// Guarantee: the watchdog is fed by the consume loop itself, so a loop that
// hangs stops the pings (and systemd, after WatchdogSec, kills and restarts
// the service).
TEST(Lifecycle, WatchdogPingsStopWhenTheLoopHangs) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  NotifySocket notify;
  WorkerProcess worker(db, broker.bootstrap(),
                       {{"NOTIFY_SOCKET", notify.path()},
                        {"WATCHDOG_USEC", "400000"},
                        // The consume loop stops for good at its 40th poll.
                        {"CRM_WORKER_HANG_AT", "after_poll"},
                        {"CRM_WORKER_CRASH_AFTER", "40"}});
  ASSERT_TRUE(wait_until([&] { return notify.seen("READY=1"); }, 30s)) << worker.process().log();
  ASSERT_TRUE(wait_until([&] { return notify.count("WATCHDOG=1") >= 2; }, 10s));
  // Messages to poll (the point is reached for each message polled).
  Producer producer(broker.bootstrap());
  std::vector<Producer::OutMessage> messages;
  for (int i = 0; i < 60; ++i) {
    messages.push_back({"crm.outreach.events", "p" + std::to_string(i), "not an event " + std::to_string(i)});
  }
  ASSERT_EQ(producer.send_all(messages), messages.size());
  // Once hung, two seconds (ten ping intervals) pass without a ping.
  bool stopped = false;
  for (int i = 0; i < 20 && !stopped; ++i) {
    const size_t before = notify.count("WATCHDOG=1");
    std::this_thread::sleep_for(2s);
    stopped = notify.count("WATCHDOG=1") == before;
  }
  EXPECT_TRUE(stopped) << "the pings never stopped";
  EXPECT_TRUE(worker.process().running());  // hung, not dead: the watchdog's case
}

// Guarantee: READY=1 is not sent while the database is unreachable.
TEST(Lifecycle, NotReadyWithoutTheDatabase) {
  DevBrokerProcess broker(1, 2);
  NotifySocket notify;
  TempDir dir;
  TestDatabase db;  // only for its connection settings
  std::map<std::string, std::string> env = {
      {"NOTIFY_SOCKET", notify.path()},
      // A port nothing listens on.
      {"CRM_WORKER_DATABASE_URL", "postgresql://nobody@127.0.0.1:" + std::to_string(free_port()) + "/none?connect_timeout=1"},
  };
  WorkerProcess worker(db, broker.bootstrap(), env);
  std::this_thread::sleep_for(4s);
  EXPECT_TRUE(worker.process().running()) << worker.process().log();
  EXPECT_FALSE(notify.seen("READY=1"));
  EXPECT_NE(worker.process().log().find("database not reachable, retrying"), std::string::npos)
      << worker.process().log();
  // And it still stops promptly when asked.
  worker.process().signal(SIGTERM);
  EXPECT_EQ(worker.process().wait(15s), 0) << worker.process().log();
}

// Guarantee: SIGHUP reloads the log level without a restart.
TEST(Lifecycle, SighupReloadsTheLogLevel) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  NotifySocket notify;
  Producer producer(broker.bootstrap());
  WorkerProcess worker(db, broker.bootstrap(), {{"NOTIFY_SOCKET", notify.path()}},
                       "[log]\nlevel = \"warn\"\n");
  ASSERT_TRUE(wait_until([&] { return notify.seen("READY=1"); }, 30s)) << worker.process().log();
  ASSERT_GE(producer.send("crm.outreach.events", "p1", discovered_event("e1", "p1", "A", "2026-01-01T00:00:00Z")), 0);
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == 1; }, 30s));
  EXPECT_EQ(worker.process().log().find(" debug "), std::string::npos) << "warn level logs no debug lines";

  std::string text;
  {
    std::ifstream in(worker.config_path());
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  text.replace(text.find("level = \"warn\""), 14, "level = \"debug\"");
  std::ofstream(worker.config_path(), std::ios::trunc) << text;
  worker.process().signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return worker.process().log().find("configuration reloaded") != std::string::npos; }, 10s))
      << worker.process().log();
  ASSERT_GE(producer.send("crm.outreach.events", "p2", discovered_event("e2", "p2", "B", "2026-01-01T00:00:00Z")), 0);
  ASSERT_TRUE(wait_until([&] { return worker.process().log().find(" debug \"batch applied\"") != std::string::npos; }, 30s))
      << worker.process().log();
  // Same process, no new assignment round: the reload did not restart anything.
  EXPECT_TRUE(worker.process().running());
  EXPECT_EQ(notify.count("READY=1"), 1u);
}

}  // namespace
}  // namespace crm::test
