// The input rows of TESTPLAN's fault matrix that the other scenarios do not
// already cover (duplicates, permutations and the poison set are in every
// scenario's stream; a replay under a new group is in scenario_kafka_test):
// a message that kills the worker every time it is decoded.

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

using namespace std::chrono_literals;

constexpr int kCrashAttempts = 3;  // consumer.crash_attempts' default

std::string one_value(TestDatabase& db, const std::string& sql, const std::string& param) {
  auto c = db.connect();
  pqxx::nontransaction tx(*c);
  pqxx::result r = tx.exec_params(sql, param);
  return r.empty() || r[0][0].is_null() ? std::string("(null)") : r[0][0].c_str();
}

// Two messages that kill every worker that decodes them, among the stream.
// The worker is started again after every death, as systemd does. Kafka
// commits are held back for a minute, so every restart redelivers far more
// than a batch before reaching the pill. Each pill must end as a dead letter
// (crashed_worker) after consumer.crash_attempts deaths on it alone, and
// every other message must be applied as if nothing happened.
TEST(CrashPill, DeadLetteredAfterCrashAttemptsAndThePartitionMovesOn) {
  const int pills = 2;
  Scenario s({.name = "messages that kill the worker",
              .kafka_properties = "\"auto.commit.interval.ms\" = \"60000\"\n",
              .crash_pills = pills});
  s.publish();
  // A pill kills one worker in a batch, then kCrashAttempts on its own.
  const int most = pills * (kCrashAttempts + 1);
  int deaths = 0;
  std::string logs;  // of the dead workers
  for (;;) {
    auto worker = s.start_worker();
    bool settled = false;
    while (!(settled = s.wait_settled(2s, false)) && worker->process().running()) {
    }
    if (settled) {
      // The rows are all there; the offsets follow at the next commit
      // (every 60 s here), once this worker has read what earlier ones
      // applied.
      ASSERT_TRUE(s.wait_settled(150s)) << worker->process().log();
      worker->process().signal(SIGTERM);
      ASSERT_EQ(worker->process().wait(30s), 0) << worker->process().log();
      break;
    }
    ASSERT_EQ(worker->process().wait(5s), 128 + SIGKILL) << worker->process().log();
    s.note_fault("deaths on a pill");
    logs += worker->process().log();
    ASSERT_LE(++deaths, most) << "the pills keep killing workers: their partitions are blocked\n"
                              << worker->process().log();
  }
  EXPECT_GE(deaths, kCrashAttempts + 1);
  // The workers said what they found.
  EXPECT_NE(logs.find("applying them one message at a time"), std::string::npos) << logs;
  s.check();
  for (int k = 0; k < pills; ++k) {
    const std::string key = "pill-" + std::to_string(k);
    EXPECT_EQ(one_value(s.db(), "SELECT reason || ': ' || error FROM dead_letters WHERE key = $1", key),
              "crashed_worker: a worker died " + std::to_string(kCrashAttempts) +
                  " times while applying this message on its own; it is not decoded again");
  }
  // Nothing left behind: every range the workers recorded was released.
  EXPECT_EQ(s.db().count("SELECT count(*) FROM consumer_inflight"), 0);

  // `dlq replay` of a pill the worker still dies on: the worker that tries
  // it dies once, and the next one does not try again.
  const std::string id = one_value(s.db(), "SELECT id FROM dead_letters WHERE key = $1", "pill-0");
  const std::map<std::string, std::string> cli_env = {{"CRM_WORKER_DATABASE_URL", s.db().url()}};
  auto [code, out] = run_cli({"dlq", "replay", "--id", id}, cli_env);
  ASSERT_EQ(code, 0) << out;
  {
    auto worker = s.start_worker();
    ASSERT_EQ(worker->process().wait(60s), 128 + SIGKILL) << worker->process().log();
  }
  {
    auto worker = s.start_worker();
    EXPECT_FALSE(worker->process().wait(5s).has_value())
        << "every new worker tries the replay again and dies:\n" << worker->process().log();
    EXPECT_EQ(one_value(s.db(),
                        "SELECT reason || ' ' || (replay_requested_at IS NULL) || ' ' || (replayed_at IS NULL)"
                        "  || ' ' || error FROM dead_letters WHERE id = $1", id),
              "crashed_worker true true replay begun; a worker that died during it left it here");
    worker->process().signal(SIGTERM);
    ASSERT_EQ(worker->process().wait(30s), 0) << worker->process().log();
  }
  // Once the worker is fixed, the replay applies it, once.
  auto [again, again_out] = run_cli({"dlq", "replay", "--id", id}, cli_env);
  ASSERT_EQ(again, 0) << again_out;
  auto worker = s.start_worker({{"CRM_WORKER_CRASH_ON_EVENT", ""}});
  ASSERT_TRUE(wait_until([&] { return one_value(s.db(), "SELECT replayed_at IS NOT NULL FROM dead_letters WHERE id = $1", id) == "t"; }, 60s))
      << worker->process().log();
  EXPECT_EQ(s.db().count("SELECT count(*) FROM processed_events WHERE event_id = 'crash-pill-0'"), 1);
  EXPECT_EQ(s.db().count("SELECT count(*) FROM prospects WHERE id = 'pill-0'"), 1);
  worker->process().signal(SIGTERM);
  ASSERT_EQ(worker->process().wait(30s), 0) << worker->process().log();
}

}  // namespace
}  // namespace crm::test
