// The shutdown rows of TESTPLAN's fault matrix, each a Scenario (see
// tests/harness/scenario.h): SIGTERM at bad moments, SIGHUP under load.
//
// Guarantee: a SIGTERM ends the worker within its deadline (the 20 s drain
// plus a margin), with exit 0 when it could finish; the offsets of every
// event it applied are committed, so the next worker re-applies nothing;
// and the stream still ends in the one final state.

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

// The drain deadline (consumer.drain_timeout, 20 s) and a margin for the
// process to exit.
constexpr auto kExitDeadline = 35s;

const std::vector<std::string> kTopics = {"crm.outreach.events", "sendgrid.events", "crm.followups",
                                          "crm.sync.jobs"};

// Every applied event's message lies below its partition's committed
// offset: the work a drained worker finished is committed in Kafka too.
void expect_applied_work_committed(Scenario& s) {
  auto positions = group_positions(s.broker().bootstrap(), "crm-worker", kTopics);
  auto conn = s.db().connect();
  pqxx::nontransaction tx(*conn);
  for (const auto& row : tx.exec("SELECT topic, partition, max(\"offset\") FROM processed_events GROUP BY 1, 2")) {
    const std::string tp = std::string(row[0].c_str()) + "/" + row[1].c_str();
    ASSERT_TRUE(positions.count(tp)) << tp;
    EXPECT_GT(positions[tp].first, row[2].as<long long>()) << tp << ": applied work not committed";
  }
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// SIGTERM at random moments in the middle of the stream, again and again.
TEST(Shutdown, SigtermMidBatchDrainsCommitsAndExitsZero) {
  Scenario s({.name = "SIGTERM mid-batch"});
  const int stops = Scenario::scaled(5, 20);
  for (int k = 0; k < stops; ++k) {
    auto worker = s.start_worker();
    const long long before = s.applied();
    s.publish(s.stream_size() / static_cast<size_t>(stops) + 1);
    ASSERT_TRUE(wait_until([&] { return s.applied() > before; }, 60s)) << worker->process().log();
    std::this_thread::sleep_for(std::chrono::milliseconds(s.rng()() % 800));
    worker->process().signal(SIGTERM);
    ASSERT_EQ(worker->process().wait(kExitDeadline), 0) << worker->process().log();
    s.note_fault("SIGTERM");
    expect_applied_work_committed(s);
  }
  s.publish();
  auto worker = s.start_worker();
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  s.check();
}

// SIGTERM before the first assignment (the brokers are unreachable), and
// SIGTERM right after a rebalance took half of the worker's partitions.
TEST(Shutdown, SigtermBeforeTheFirstAssignmentAndAfterALostPartition) {
  Scenario s({.name = "SIGTERM before assignment and after a lost partition"});
  {
    ASSERT_EQ(s.broker().control("down -1"), "ok");
    auto early = s.start_worker();
    std::this_thread::sleep_for(3s);
    early->process().signal(SIGTERM);
    EXPECT_EQ(early->process().wait(kExitDeadline), 0) << early->process().log();
    ASSERT_EQ(s.broker().control("up -1"), "ok");
    s.note_fault("SIGTERM before the first assignment");
  }
  auto a = s.start_worker();
  s.publish(s.stream_size() / 2);
  ASSERT_TRUE(wait_until([&] { return s.applied() > 0; }, 60s)) << a->process().log();
  auto b = s.start_worker();
  ASSERT_TRUE(wait_until([&] { return count_of(a->process().log(), "partitions assigned") >= 2 ||
                                      a->process().log().find("revoked") != std::string::npos; },
                         60s))
      << a->process().log();
  a->process().signal(SIGTERM);
  EXPECT_EQ(a->process().wait(kExitDeadline), 0) << a->process().log();
  s.note_fault("SIGTERM after a lost partition");
  s.publish();
  ASSERT_TRUE(s.wait_settled(120s)) << b->process().log();
  s.check();
}

// SIGTERM while the brokers are down, and while the database is down: the
// worker cannot finish, and still exits within its deadline, losing
// nothing.
TEST(Shutdown, SigtermWithTheBrokersOrTheDatabaseDownExitsInTime) {
  Scenario s({.name = "SIGTERM with brokers or database down"});
  {
    auto worker = s.start_worker();
    s.publish(s.stream_size() / 3);
    ASSERT_TRUE(wait_until([&] { return s.applied() > 0; }, 60s)) << worker->process().log();
    ASSERT_EQ(s.broker().control("down -1"), "ok");
    worker->process().signal(SIGTERM);
    auto code = worker->process().wait(kExitDeadline);
    ASSERT_TRUE(code.has_value()) << worker->process().log();
    EXPECT_LT(*code, 128) << "killed by a signal rather than exiting: " << worker->process().log();
    ASSERT_EQ(s.broker().control("up -1"), "ok");
    s.note_fault("SIGTERM with the brokers down");
  }
  {
    auto worker = s.start_worker();
    const long long before = s.applied();
    s.publish(s.stream_size() / 3);
    ASSERT_TRUE(wait_until([&] { return s.applied() > before; }, 60s)) << worker->process().log();
    s.pg().halt(true);
    worker->process().signal(SIGTERM);
    auto code = worker->process().wait(kExitDeadline);
    ASSERT_TRUE(code.has_value()) << worker->process().log();
    EXPECT_LT(*code, 128) << "killed by a signal rather than exiting: " << worker->process().log();
    s.pg().start();
    s.note_fault("SIGTERM with the database down");
  }
  s.publish();
  auto worker = s.start_worker();
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  s.check();
}

// SIGHUP under load reloads the configuration without leaving the group:
// no rebalance, no stop in consumption.
TEST(Shutdown, SighupUnderLoadDoesNotRebalance) {
  Scenario s({.name = "SIGHUP under load"});
  auto worker = s.start_worker();
  s.publish(s.stream_size() / 2);
  ASSERT_TRUE(wait_until([&] { return s.applied() > 0; }, 60s)) << worker->process().log();
  const int assigned = count_of(worker->process().log(), "partitions assigned");
  for (int k = 0; k < 3; ++k) {
    worker->process().signal(SIGHUP);
    std::this_thread::sleep_for(500ms);
    s.note_fault("SIGHUP");
  }
  s.publish();
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  EXPECT_EQ(count_of(worker->process().log(), "partitions assigned"), assigned) << worker->process().log();
  EXPECT_EQ(worker->process().log().find("revoked"), std::string::npos) << worker->process().log();
  EXPECT_TRUE(worker->process().running());
  s.check();
}

}  // namespace
}  // namespace crm::test
