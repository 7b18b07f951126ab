// Several workers in one consumer group: they share the partitions, and a
// rebalance redelivers but never doubles an effect, under the eager and the
// cooperative protocol.
//
// (librdkafka 2.0.2's mock cluster does not fence a static member whose
// group.instance.id is taken over, so the fatal-error path cannot be driven
// from here; it is the one fatal cause the consumer documents.)

#include <gtest/gtest.h>
#include <signal.h>

#include "tests/harness/harness.h"

namespace crm::test {
namespace {

const std::string kOutreach = "crm.outreach.events";

void produce(Producer& p, int first, int n) {
  for (int i = first; i < first + n; ++i) {
    std::string pid = "p" + std::to_string(i % 25);
    ASSERT_GE(p.send(kOutreach, pid, discovered_event("ev-" + std::to_string(i), pid, "N" + std::to_string(i),
                                                       "2026-01-01T00:00:00Z")),
              0);
  }
}

class GroupTest : public ::testing::TestWithParam<const char*> {};

// Guarantee: workers joining and leaving mid-stream (a rebalance each time)
// leave every distinct event applied exactly once.
TEST_P(GroupTest, WorkersJoiningAndLeavingApplyEachEventOnce) {
  TestDatabase db;
  DevBrokerProcess broker(3, 6);
  Producer producer(broker.bootstrap());
  // The harness's config ends inside its [kafka.properties] table.
  const std::string config = std::string("\"partition.assignment.strategy\" = \"") + GetParam() + "\"\n";
  WorkerProcess a(db, broker.bootstrap(), {}, config);
  produce(producer, 0, 100);
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") >= 100; }, 60s)) << a.process().log();
  {
    WorkerProcess b(db, broker.bootstrap(), {}, config);
    produce(producer, 100, 100);
    ASSERT_TRUE(wait_until([&] { return b.process().log().find("partitions assigned") != std::string::npos; }, 60s))
        << b.process().log();
    produce(producer, 200, 100);
    ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") >= 300; }, 60s))
        << a.process().log() << b.process().log();
    b.process().signal(SIGTERM);
    ASSERT_EQ(b.process().wait(30s), 0) << b.process().log();
  }
  produce(producer, 300, 100);
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") >= 400; }, 60s)) << a.process().log();
  EXPECT_EQ(db.count("SELECT count(*) FROM processed_events"), 400);
  EXPECT_EQ(db.count("SELECT count(*) FROM outreach_activities"), 400);
  EXPECT_EQ(db.count("SELECT count(*) FROM prospects"), 25);
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 0);
  EXPECT_TRUE(a.process().running());
}

INSTANTIATE_TEST_SUITE_P(Strategies, GroupTest, ::testing::Values("range", "cooperative-sticky"),
                         [](const auto& info) { return std::string(info.param) == "range" ? "Eager" : "Cooperative"; });

// Guarantee: partitions that move away and come back while the database is
// down are consumed again afterwards (librdkafka keeps a pause across
// unassign and reassign, so the worker must resume every partition it
// paused, not only those it still holds).
TEST(Group, PartitionsMovedDuringAnOutageAreConsumedAfterIt) {
  TestDatabase db_a;
  TestDatabase db_b;
  DevBrokerProcess broker(1, 6);
  Producer producer(broker.bootstrap());
  WorkerProcess a(db_a, broker.bootstrap());
  ASSERT_TRUE(wait_until([&] { return a.http_get("/readyz").first == 200; }, 30s)) << a.process().log();
  db_a.set_available(false);
  produce(producer, 0, 24);  // a's batch now retries with its partitions paused
  ASSERT_TRUE(wait_until([&] { return a.process().log().find("batch not applied, retrying") != std::string::npos; }, 30s))
      << a.process().log();
  {
    // b takes half the partitions (into a database of its own).
    WorkerProcess b(db_b, broker.bootstrap());
    ASSERT_TRUE(wait_until([&] { return b.http_get("/readyz").first == 200; }, 60s)) << b.process().log();
    db_a.set_available(true);
    ASSERT_TRUE(wait_until([&] {
      return a.process().log().find("database back, batch applied") != std::string::npos ||
             db_a.count("SELECT count(*) FROM processed_events") > 0;
    }, 60s)) << a.process().log();
    b.process().signal(SIGTERM);
    ASSERT_EQ(b.process().wait(30s), 0) << b.process().log();
  }
  // Everything is a's again; new events on every partition must arrive.
  for (int i = 0; i < 60; ++i) {
    std::string pid = "after-" + std::to_string(i);
    ASSERT_GE(producer.send(kOutreach, pid, discovered_event(pid, pid, "N", "2026-01-01T00:00:00Z"), {}, i % 6), 0);
  }
  EXPECT_TRUE(wait_until([&] {
    return db_a.count("SELECT count(*) FROM processed_events WHERE event_id LIKE 'after-%'") == 60;
  }, 60s)) << db_a.scalar("SELECT string_agg(DISTINCT partition::text, ',') FROM processed_events WHERE event_id LIKE 'after-%'")
           << "\n" << a.process().log();
}

}  // namespace
}  // namespace crm::test
