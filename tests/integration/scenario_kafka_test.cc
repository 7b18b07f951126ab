// The Kafka rows of TESTPLAN's fault matrix, each a Scenario (see
// tests/harness/scenario.h): a seeded stream with duplicates and poison,
// the fault, then the checks every scenario ends with and its figures.
//
// Guarantee under every one of them: each distinct event has its effect
// exactly once, the poison is dead-lettered where it was published, and the
// group's offsets end at the end of every partition.

#include <gtest/gtest.h>
#include <signal.h>

#include <functional>
#include <thread>

#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

// Kills one of two workers at a random moment, again and again, while the
// stream is published in parts; a fresh worker takes the dead one's place
// each time.
class KillNine : public ::testing::TestWithParam<const char*> {};

TEST_P(KillNine, RandomKillsOfOneOfTwoWorkers) {
  Scenario s({.name = std::string("kill -9 (") + GetParam() + ")", .assignment = GetParam()});
  std::unique_ptr<WorkerProcess> workers[2] = {s.start_worker(), s.start_worker()};
  const int kills = Scenario::scaled(6, 20);
  for (int k = 0; k < kills; ++k) {
    s.publish(s.stream_size() / static_cast<size_t>(kills) + 1);
    const long long before = s.applied();
    // Somewhere in the middle of the work that part brought.
    wait_until([&] { return s.applied() > before; }, 20s);
    std::this_thread::sleep_for(std::chrono::milliseconds(s.rng()() % 700));
    auto& victim = workers[s.rng()() % 2];
    victim->process().signal(SIGKILL);
    ASSERT_TRUE(victim->process().wait(10s).has_value());
    s.note_fault("kill -9");
    victim = s.start_worker();
  }
  s.publish();
  ASSERT_TRUE(s.wait_settled(120s)) << workers[0]->process().log() << workers[1]->process().log();
  s.check();
}

INSTANTIATE_TEST_SUITE_P(Assignment, KillNine, ::testing::Values("range", "cooperative-sticky"),
                         [](const auto& info) { return std::string(info.param) == "range" ? "Eager" : "Cooperative"; });

// Each crash point of the consume path, reached a few times: the worker
// SIGKILLs itself exactly in that window, and the next worker starts from
// whatever the dead one left.
class ConsumeCrashPoint : public ::testing::TestWithParam<const char*> {};

TEST_P(ConsumeCrashPoint, TheWindowLosesAndDoublesNothing) {
  const std::string point = GetParam();
  // A worker killed here while it applies one message on its own (as it
  // does after a death, db/consume_guard.h) counts against that message;
  // these deaths are the test's, not the message's.
  Scenario s({.name = "crash at " + point, .crash_attempts = 1000});
  s.publish();
  const int rounds = Scenario::scaled(3, 10);
  int crashes = 0;
  for (int c = 0; c < rounds; ++c) {
    // A process drains once: in_drain is reached on its first pass or never.
    const std::string after = point == "in_drain" ? "1" : std::to_string(1 + s.rng()() % 4);
    auto worker = s.start_worker({{"CRM_WORKER_CRASH_AT", point}, {"CRM_WORKER_CRASH_AFTER", after}});
    if (point == "in_drain") {
      // The drain runs after SIGTERM: stop the worker while it has work.
      const long long before = s.applied();
      ASSERT_TRUE(wait_until([&] { return s.applied() > before; }, 30s)) << worker->process().log();
      worker->process().signal(SIGTERM);
    }
    auto code = worker->process().wait(45s);
    if (!code.has_value()) {
      // Not reached again: the stream is done without it (dead letters come
      // in a few batches only).
      ASSERT_TRUE(s.wait_settled(60s)) << worker->process().log();
      worker->process().signal(SIGTERM);
      ASSERT_EQ(worker->process().wait(30s), 0) << worker->process().log();
      break;
    }
    if (*code != 128 + SIGKILL) {
      // A SIGTERM with nothing left to drain.
      ASSERT_EQ(point, "in_drain") << *code << worker->process().log();
      ASSERT_EQ(*code, 0) << worker->process().log();
      break;
    }
    s.note_fault("crashes at " + point);
    ++crashes;
  }
  EXPECT_GT(crashes, 0) << "the worker never reached " << point << ": the scenario tested nothing";
  auto worker = s.start_worker();
  ASSERT_TRUE(s.wait_settled(90s)) << worker->process().log();
  s.check();
}

INSTANTIATE_TEST_SUITE_P(Points, ConsumeCrashPoint,
                         ::testing::Values("after_poll", "before_db_commit", "after_db_commit",
                                           "after_dead_letter_row", "in_drain"));

std::string logs(std::initializer_list<WorkerProcess*> workers) {
  std::string out;
  for (WorkerProcess* w : workers) out += w->process().log() + "\n-----\n";
  return out;
}

// Every broker refuses connections for a while in the middle of the
// stream; the worker waits, reconnects and goes on.
TEST(KafkaFaults, AllBrokersDown) {
  Scenario s({.name = "all brokers down"});
  auto worker = s.start_worker();
  const int seconds = Scenario::scaled(10, 30);
  s.publish_in_parts(2, [&](int k) {
    if (k != 0) return;
    ASSERT_EQ(s.broker().control("down -1"), "ok");
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    ASSERT_EQ(s.broker().control("up -1"), "ok");
    s.note_fault("all brokers down " + std::to_string(seconds) + " s");
  });
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  EXPECT_TRUE(worker->process().running());
  s.check();
}

// Partition leaders move between brokers, one partition has no leader for
// a while, and a leader broker goes down.
TEST(KafkaFaults, LeadersMoveVanishAndGoDown) {
  Scenario s({.name = "leaders moved"});
  auto worker = s.start_worker();
  const std::string topic = "crm.outreach.events";
  s.publish_in_parts(4, [&](int k) {
    for (int p = 0; p < s.options().partitions; ++p) {
      ASSERT_EQ(s.broker().control("leader " + topic + " " + std::to_string(p) + " " + std::to_string(1 + (p + k) % 3)),
                "ok");
    }
    s.note_fault("leader moves", s.options().partitions);
    if (k == 1) {
      ASSERT_EQ(s.broker().control("leader " + topic + " 0 -1"), "ok");
      std::this_thread::sleep_for(5s);
      ASSERT_EQ(s.broker().control("leader " + topic + " 0 1"), "ok");
      s.note_fault("leaderless partition 5 s");
    }
    if (k == 2) {
      // Partition 1's leader is broker 1 + (1 + 2) % 3 = 1.
      ASSERT_EQ(s.broker().control("down 1"), "ok");
      std::this_thread::sleep_for(5s);
      ASSERT_EQ(s.broker().control("up 1"), "ok");
      s.note_fault("leader broker down 5 s");
    }
  });
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  s.check();
}

// The group coordinator moves to another broker, then its broker goes down
// with two workers in the group.
TEST(KafkaFaults, CoordinatorMovesAndGoesDown) {
  Scenario s({.name = "coordinator moved and down"});
  ASSERT_EQ(s.broker().control("coordinator crm-worker 1"), "ok");
  auto a = s.start_worker();
  auto b = s.start_worker();
  s.publish_in_parts(3, [&](int k) {
    if (k == 0) {
      ASSERT_EQ(s.broker().control("coordinator crm-worker 2"), "ok");
      s.note_fault("coordinator moves");
    }
    if (k == 1) {
      ASSERT_EQ(s.broker().control("down 2"), "ok");
      std::this_thread::sleep_for(8s);
      ASSERT_EQ(s.broker().control("up 2"), "ok");
      s.note_fault("coordinator down 8 s");
    }
  });
  ASSERT_TRUE(s.wait_settled(120s)) << logs({a.get(), b.get()});
  s.check();
}

// Heartbeats fail (the coordinator says the member is unknown: a zombie
// owner whose partitions are already someone else's, or not the
// coordinator), and offset commits fail or time out.
TEST(KafkaFaults, HeartbeatAndOffsetCommitErrors) {
  Scenario s({.name = "heartbeat and commit errors", .assignment = "cooperative-sticky"});
  auto a = s.start_worker();
  auto b = s.start_worker();
  const std::vector<std::string> faults = {
      "err Heartbeat 3 UNKNOWN_MEMBER_ID", "err OffsetCommit 6 REQUEST_TIMED_OUT",
      "err Heartbeat 4 NOT_COORDINATOR",   "err OffsetCommit 3 UNKNOWN_MEMBER_ID",
      "err Heartbeat 2 ILLEGAL_GENERATION", "err OffsetCommit 4 COORDINATOR_NOT_AVAILABLE"};
  s.publish_in_parts(static_cast<int>(faults.size()), [&](int k) {
    ASSERT_EQ(s.broker().control(faults[static_cast<size_t>(k)]), "ok") << faults[static_cast<size_t>(k)];
    s.note_fault(faults[static_cast<size_t>(k)].substr(4));
    std::this_thread::sleep_for(1500ms);
  });
  ASSERT_TRUE(s.wait_settled(120s)) << logs({a.get(), b.get()});
  s.check();
}

// Workers join and leave every couple of seconds, and one is stopped
// (SIGSTOP) past its session timeout, its partitions given away while it
// holds a batch, then continued.
class RebalanceStorm : public ::testing::TestWithParam<const char*> {};

TEST_P(RebalanceStorm, WorkersComeAndGoAndAZombieWakesUp) {
  Scenario s({.name = std::string("rebalance storm (") + GetParam() + ")", .assignment = GetParam()});
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(s.start_worker());
  const int steps = Scenario::scaled(8, 30);
  s.publish_in_parts(steps, [&](int k) {
    if (k == steps / 2) {
      // Someone must be there to take the zombie's partitions.
      while (workers.size() < 2) workers.push_back(s.start_worker());
      std::this_thread::sleep_for(3s);
      WorkerProcess& zombie = *workers.front();
      zombie.process().signal(SIGSTOP);
      std::this_thread::sleep_for(8s);  // session.timeout.ms is 6 s
      zombie.process().signal(SIGCONT);
      s.note_fault("SIGSTOP past the session timeout");
      return;
    }
    if (workers.size() < 3 && (workers.size() == 1 || s.rng()() % 2 == 0)) {
      workers.push_back(s.start_worker());
      s.note_fault("joins");
    } else {
      auto victim = workers.begin() + static_cast<long>(s.rng()() % workers.size());
      (*victim)->process().signal(s.rng()() % 2 == 0 ? SIGTERM : SIGKILL);
      (*victim)->process().wait(30s);
      workers.erase(victim);
      s.note_fault("leaves");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1000 + s.rng()() % 2000));
  });
  if (workers.empty()) workers.push_back(s.start_worker());
  std::string all_logs;
  for (auto& w : workers) all_logs += w->process().log();
  ASSERT_TRUE(s.wait_settled(150s)) << all_logs;
  s.check();
}

INSTANTIATE_TEST_SUITE_P(Assignment, RebalanceStorm, ::testing::Values("range", "cooperative-sticky"),
                         [](const auto& info) { return std::string(info.param) == "range" ? "Eager" : "Cooperative"; });

// One worker's loop stalls longer than max.poll.interval.ms (15 s) right
// after a poll: librdkafka leaves the group for it, the other worker takes
// its partitions, and then the stalled one goes on with the batch it holds.
TEST(KafkaFaults, MaxPollIntervalExceeded) {
  Scenario s({.name = "max.poll.interval exceeded"});
  auto stalling = s.start_worker({{"CRM_WORKER_HANG_AT", "after_poll"},
                                  {"CRM_WORKER_CRASH_AFTER", "5"},
                                  {"CRM_WORKER_HANG_MS", "20000"}});
  auto other = s.start_worker();
  s.publish();
  ASSERT_TRUE(wait_until([&] { return stalling->process().log().find("max.poll") != std::string::npos ||
                                      stalling->process().log().find("MAX_POLL") != std::string::npos; },
                         60s))
      << stalling->process().log();
  s.note_fault("20 s stall after a poll");
  ASSERT_TRUE(s.wait_settled(120s)) << logs({stalling.get(), other.get()});
  EXPECT_TRUE(stalling->process().running()) << stalling->process().log();
  s.check();
}

// Every broker answers 300 ms late.
TEST(KafkaFaults, SlowBrokers) {
  Scenario s({.name = "slow brokers"});
  for (int b = 1; b <= 3; ++b) ASSERT_EQ(s.broker().control("rtt " + std::to_string(b) + " 300"), "ok");
  s.note_fault("300 ms round trips");
  auto worker = s.start_worker();
  s.publish();
  ASSERT_TRUE(s.wait_settled(150s)) << worker->process().log();
  s.check();
}

// The brokers are unreachable when the worker starts: it waits (not ready,
// still running) and starts consuming when they come.
TEST(KafkaFaults, BrokersUnreachableAtStart) {
  Scenario s({.name = "brokers unreachable at start"});
  s.publish();
  ASSERT_EQ(s.broker().control("down -1"), "ok");
  auto worker = s.start_worker();
  std::this_thread::sleep_for(8s);
  EXPECT_TRUE(worker->process().running()) << worker->process().log();
  EXPECT_NE(worker->http_get("/readyz").first, 200);
  ASSERT_EQ(s.broker().control("up -1"), "ok");
  s.note_fault("brokers down for the first 8 s");
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  s.check();
}

// A new consumer group on a topic that already has everything: it reads
// from the beginning (nothing skipped) and changes no row.
TEST(KafkaFaults, NewGroupOnOldDataChangesNothing) {
  Scenario s({.name = "replay under a new group"});
  {
    auto worker = s.start_worker();
    s.publish();
    ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
    worker->process().signal(SIGTERM);
    ASSERT_EQ(worker->process().wait(30s), 0) << worker->process().log();
  }
  const std::string before = s.every_row();
  auto replay = s.start_worker({{"CRM_WORKER_KAFKA_GROUP_ID", "crm-worker-replay"}});
  const std::vector<std::string> topics = {"crm.outreach.events", "sendgrid.events", "crm.followups", "crm.sync.jobs"};
  ASSERT_TRUE(wait_until([&] {
    auto positions = group_positions(s.broker().bootstrap(), "crm-worker-replay", topics);
    if (positions.empty()) return false;
    for (const auto& [tp, pos] : positions) {
      if (pos.first != pos.second) return false;
    }
    return true;
  }, 120s)) << replay->process().log();
  s.note_fault("a full replay under a new group");
  EXPECT_EQ(s.every_row(), before);
  s.check();
}

}  // namespace
}  // namespace crm::test
