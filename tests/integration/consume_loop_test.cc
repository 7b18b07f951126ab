// The consume loop against the real PostgreSQL and the dev broker: each test
// states the guarantee it checks and counts events produced, applied and
// doubled.

#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <thread>

#include "tests/harness/harness.h"

namespace crm::test {
namespace {

const std::string kOutreach = "crm.outreach.events";

std::string event_time(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "2026-03-01T10:%02d:%02dZ", (i / 60) % 60, i % 60);
  return buf;
}

// A snapshot of the tables the events change, volatile columns left out,
// in a stable order: two snapshots are equal iff the effects are.
std::string snapshot(const TestDatabase& db) {
  return db.scalar(
             "SELECT string_agg(concat_ws('|', id, name, email, phone, company, sales_status,"
             " email_status, profile_updated_at), E'\\n' ORDER BY id) FROM prospects") +
         "\n--\n" +
         db.scalar("SELECT string_agg(concat_ws('|', prospect_id, stage, stage_date, notes), E'\\n'"
                   " ORDER BY prospect_id, stage) FROM pipeline_stages") +
         "\n--\n" +
         db.scalar("SELECT string_agg(concat_ws('|', event_id, prospect_id, type, occurred_at,"
                   " details::text), E'\\n' ORDER BY event_id) FROM outreach_activities");
}

class ConsumeLoopTest : public ::testing::Test {
 protected:
  TestDatabase db_;
  DevBrokerProcess broker_{1, 4};
  Producer producer_{broker_.bootstrap()};

  // Produces `n` distinct discovered events over `prospects` prospects, each
  // sent `copies` times. Returns how many messages were acknowledged.
  int produce_events(int first, int n, int prospects, int copies = 1) {
    int acked = 0;
    for (int i = first; i < first + n; ++i) {
      std::string pid = "p" + std::to_string(i % prospects);
      std::string value = discovered_event("ev-" + std::to_string(i), pid,
                                           "Name " + std::to_string(i), event_time(i),
                                           "\"email\":\"p" + std::to_string(i) + "@example.com\"");
      for (int c = 0; c < copies; ++c) {
        if (producer_.send(kOutreach, pid, value) >= 0) acked++;
      }
    }
    return acked;
  }

  bool wait_processed(long long n, std::chrono::milliseconds timeout = 60s) {
    return wait_until([&] { return db_.count("SELECT count(*) FROM processed_events") >= n; }, timeout);
  }
};

// A batch of SendGrid webhook messages, each holding many events, is
// applied in transactions of at most consumer.batch_max_events events (at
// least one message each). Events applied in one transaction share its
// start time in processed_events.processed_at.
TEST_F(ConsumeLoopTest, ManyEventsPerMessageAreAppliedInTransactionsOfAtMostTheBatchSize) {
  const int messages = 10, per_message = 8;
  for (int m = 0; m < messages; ++m) {
    std::string body = "[";
    for (int k = 0; k < per_message; ++k) {
      const std::string id = "sg-" + std::to_string(m) + "-" + std::to_string(k);
      body += std::string(k ? "," : "") + R"({"email":"a@x","timestamp":17723628)" + std::to_string(10 + k) +
              R"(,"event":"open","sg_event_id":")" + id + R"(","sg_message_id":"XM)" + std::to_string(m) +
              R"(.f","email_id":"m)" + std::to_string(m) + R"(","prospect_id":"p1"})";
    }
    ASSERT_GE(producer_.send("sendgrid.events", "k", body + "]", {}, 0), 0);
  }
  // All of them waiting before the worker starts: one batch of 10 messages.
  WorkerProcess worker(db_, broker_.bootstrap(), {}, "[consumer]\nbatch_max_events = 10\n");
  ASSERT_TRUE(wait_processed(messages * per_message)) << worker.process().log();
  EXPECT_EQ(db_.count("SELECT max(n) FROM (SELECT count(*) AS n FROM processed_events GROUP BY processed_at) t"),
            per_message)
      << "events per transaction";
  EXPECT_EQ(db_.count("SELECT count(*) FROM email_activities"), messages);
}

// Guarantee: every distinct event has its effect exactly once, duplicates
// in the same and in later batches included.
TEST_F(ConsumeLoopTest, AppliesEachDistinctEventOnce) {
  WorkerProcess worker(db_, broker_.bootstrap());
  int acked = produce_events(0, 60, 15, 2);
  ASSERT_EQ(acked, 120);
  ASSERT_TRUE(wait_processed(60)) << worker.process().log();
  // Give the worker time to chew on the duplicates too.
  ASSERT_TRUE(wait_until([&] {
    return metric_sum(worker.http_get("/metrics").second, "crm_worker_events_total{outcome=\"duplicate\"") >= 60;
  }, 30s)) << worker.process().log();
  EXPECT_EQ(db_.count("SELECT count(*) FROM processed_events"), 60);
  EXPECT_EQ(db_.count("SELECT count(*) FROM outreach_activities"), 60);
  EXPECT_EQ(db_.count("SELECT count(*) FROM (SELECT event_id FROM outreach_activities GROUP BY 1 HAVING count(*) > 1) d"), 0);
  EXPECT_EQ(db_.count("SELECT count(*) FROM prospects"), 15);
  EXPECT_EQ(db_.count("SELECT count(*) FROM pipeline_stages WHERE stage = 'discovered'"), 15);
  // The profile is the newest event's: p0 got events 0, 15, 30, 45.
  EXPECT_EQ(db_.scalar("SELECT name FROM prospects WHERE id = 'p0'"), "Name 45");
  EXPECT_EQ(db_.scalar("SELECT to_char(stage_date AT TIME ZONE 'UTC', 'HH24:MI:SS') FROM pipeline_stages WHERE prospect_id = 'p0'"),
            "10:00:00");
  std::string metrics = worker.http_get("/metrics").second;
  EXPECT_EQ(metric_sum(metrics, "crm_worker_events_total{outcome=\"applied\""), 60);
  EXPECT_EQ(metric_sum(metrics, "crm_worker_events_total{outcome=\"duplicate\""), 60);
}

// Guarantee: the whole topic redelivered (a new consumer group) changes
// nothing.
TEST_F(ConsumeLoopTest, RedeliveredTopicChangesNothing) {
  produce_events(0, 40, 10);
  std::string before;
  {
    WorkerProcess worker(db_, broker_.bootstrap());
    ASSERT_TRUE(wait_processed(40)) << worker.process().log();
    before = snapshot(db_);
    worker.process().signal(SIGTERM);
    ASSERT_EQ(worker.process().wait(30s), 0) << worker.process().log();
  }
  WorkerProcess again(db_, broker_.bootstrap(), {{"CRM_WORKER_KAFKA_GROUP_ID", "another-group"}});
  ASSERT_TRUE(wait_until([&] {
    return metric_sum(again.http_get("/metrics").second, "crm_worker_events_total{outcome=\"duplicate\"") >= 40;
  }, 60s)) << again.process().log();
  EXPECT_EQ(snapshot(db_), before);
  EXPECT_EQ(db_.count("SELECT count(*) FROM processed_events"), 40);
}

// Guarantee: a crash after the database commit but before the offsets are
// stored re-applies nothing when the messages come back.
TEST_F(ConsumeLoopTest, CrashAfterCommitBeforeOffsetStoreReappliesNothing) {
  produce_events(0, 30, 10);
  {
    WorkerProcess crashing(db_, broker_.bootstrap(), {{"CRM_WORKER_CRASH_AT", "after_db_commit"}});
    auto code = crashing.process().wait(60s);
    ASSERT_TRUE(code.has_value()) << crashing.process().log();
    EXPECT_EQ(*code, 128 + SIGKILL);
  }
  long long committed = db_.count("SELECT count(*) FROM processed_events");
  ASSERT_GT(committed, 0);
  WorkerProcess worker(db_, broker_.bootstrap());
  ASSERT_TRUE(wait_processed(30)) << worker.process().log();
  // The crashed batch was delivered again and recognised as done.
  ASSERT_TRUE(wait_until([&] {
    return metric_sum(worker.http_get("/metrics").second, "crm_worker_events_total{outcome=\"duplicate\"") >= committed;
  }, 30s)) << worker.process().log();
  EXPECT_EQ(db_.count("SELECT count(*) FROM outreach_activities"), 30);
  EXPECT_EQ(db_.count("SELECT count(*) FROM processed_events"), 30);
}

// Guarantee: malformed input becomes a dead letter with its reason and
// origin, in the table and on the dead-letter topic, and later messages
// still apply.
TEST_F(ConsumeLoopTest, PoisonBecomesDeadLettersAndLaterMessagesApply) {
  WorkerProcess worker(db_, broker_.bootstrap(), {}, "[consumer]\nmax_message_bytes = 2000\nmax_string_bytes = 1000\n");
  struct Poison {
    std::string value;
    std::string reason;
  };
  const std::string big_name(2500, 'x');
  std::vector<Poison> poison = {
      {"", "empty"},
      {"{not json", "not_json"},
      {discovered_event("big", "px", big_name, event_time(1)), "too_large"},
      {discovered_event("nul", "px", "a\\u0000b", event_time(1)), "nul_in_string"},
      {R"({"specversion":"1.0","id":"u1","source":"t","type":"crm.no.such.type","time":"2026-03-01T10:00:00Z","data":{}})", "unknown_type"},
      {R"({"specversion":"1.0","id":"w1","source":"t","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":[1,2]})", "wrong_type"},
      {R"({"specversion":"1.0","id":"m1","source":"t","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"px"}})", "missing_field"},
  };
  // All on one partition, so "later messages" is well defined.
  std::map<std::string, long long> offsets;
  for (const auto& p : poison) {
    long long off = producer_.send(kOutreach, "px", p.value, {}, 2);
    ASSERT_GE(off, 0);
    offsets[p.reason] = off;
  }
  ASSERT_GE(producer_.send(kOutreach, "good", discovered_event("good-1", "good", "Good", event_time(2)), {}, 2), 0);

  ASSERT_TRUE(wait_processed(1)) << worker.process().log();
  ASSERT_TRUE(wait_until([&] { return db_.count("SELECT count(*) FROM dead_letters") >= 7; }, 30s))
      << worker.process().log();
  EXPECT_EQ(db_.scalar("SELECT name FROM prospects WHERE id = 'good'"), "Good");
  EXPECT_EQ(db_.count("SELECT count(*) FROM dead_letters"), 7);
  // A dead-lettered event leaves no trace of its own: its savepoint was
  // rolled back, so a fixed replay can still apply it.
  EXPECT_EQ(db_.count("SELECT count(*) FROM processed_events"), 1);
  EXPECT_EQ(db_.count("SELECT count(*) FROM outreach_activities"), 1);
  EXPECT_EQ(db_.count("SELECT count(*) FROM prospects"), 1);
  for (const auto& [reason, off] : offsets) {
    EXPECT_EQ(db_.count("SELECT count(*) FROM dead_letters WHERE reason = '" + reason +
                        "' AND topic = 'crm.outreach.events' AND partition = 2 AND \"offset\" = " +
                        std::to_string(off) + " AND error <> ''"),
              1)
        << reason;
  }
  // The payload is kept byte for byte (here: the NUL-bearing JSON text).
  EXPECT_EQ(db_.scalar("SELECT convert_from(payload, 'UTF8') FROM dead_letters WHERE reason = 'nul_in_string'"),
            poison[3].value);
  auto published = consume_topic(broker_.bootstrap(), "crm.dead-letter", 7, 30s);
  ASSERT_EQ(published.size(), 7u);
  std::set<std::string> reasons;
  for (const auto& m : published) {
    reasons.insert(m.headers.at("crm_reason"));
    EXPECT_EQ(m.headers.at("crm_original_topic"), kOutreach);
    EXPECT_EQ(m.headers.at("crm_original_partition"), "2");
  }
  EXPECT_EQ(reasons.size(), 7u);
  std::string metrics = worker.http_get("/metrics").second;
  EXPECT_EQ(metric_sum(metrics, "crm_worker_dead_letters_total"), 7);
  // The unknown type is counted under "other", not under its own label.
  EXPECT_EQ(metrics.find("crm.no.such.type"), std::string::npos);
}

// Guarantee: while the database is unreachable nothing is dead-lettered or
// skipped; when it returns every event is applied.
TEST_F(ConsumeLoopTest, DatabaseOutagePausesAndLosesNothing) {
  WorkerProcess worker(db_, broker_.bootstrap());
  produce_events(0, 10, 5);
  ASSERT_TRUE(wait_processed(10)) << worker.process().log();

  // Caught up: nothing waits.
  ASSERT_TRUE(wait_until([&] {
    return metric_sum(worker.http_get("/metrics").second, "crm_worker_kafka_consumer_lag_seconds{") == 0;
  }, 10s));
  db_.set_available(false);
  produce_events(10, 20, 5);
  // The worker keeps running and keeps its hands off the offsets.
  std::this_thread::sleep_for(3s);
  ASSERT_TRUE(worker.process().running()) << worker.process().log();
  EXPECT_EQ(worker.http_get("/readyz").first, 503);
  // Its partitions are paused, and the lag in seconds shows the held
  // messages ageing (the offset lag would stand still).
  const std::string during = worker.http_get("/metrics").second;
  double oldest = 0;
  for (int p = 0; p < 4; ++p) {
    oldest = std::max(oldest, metric_sum(during, "crm_worker_kafka_consumer_lag_seconds{partition=\"" +
                                                     std::to_string(p) + "\",topic=\"crm.outreach.events\"}"));
  }
  EXPECT_GE(oldest, 2.0) << during;
  db_.set_available(true);
  ASSERT_TRUE(wait_processed(30)) << worker.process().log();
  EXPECT_TRUE(wait_until([&] {
    return metric_sum(worker.http_get("/metrics").second, "crm_worker_kafka_consumer_lag_seconds{") == 0;
  }, 10s));
  EXPECT_EQ(db_.count("SELECT count(*) FROM dead_letters"), 0);
  EXPECT_EQ(db_.count("SELECT count(*) FROM outreach_activities"), 30);
  EXPECT_TRUE(wait_until([&] { return worker.http_get("/readyz").first == 200; }, 10s));
  EXPECT_NE(worker.process().log().find("batch not applied, retrying"), std::string::npos);
}

// Guarantee: SIGTERM drains and exits 0; what it did not finish is applied
// by the next worker, and nothing twice.
TEST_F(ConsumeLoopTest, SigtermDrainsAndExitsZero) {
  produce_events(0, 200, 40);
  {
    WorkerProcess worker(db_, broker_.bootstrap(), {}, "[consumer]\nbatch_max_events = 10\n");
    ASSERT_TRUE(wait_until([&] { return db_.count("SELECT count(*) FROM processed_events") > 0; }, 60s))
        << worker.process().log();
    worker.process().signal(SIGTERM);
    auto code = worker.process().wait(30s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 0) << worker.process().log();
    EXPECT_NE(worker.process().log().find("drained ok=true"), std::string::npos) << worker.process().log();
  }
  WorkerProcess next(db_, broker_.bootstrap());
  ASSERT_TRUE(wait_processed(200)) << next.process().log();
  EXPECT_EQ(db_.count("SELECT count(*) FROM outreach_activities"), 200);
}

// Guarantee: /healthz answers, /readyz turns ready once the database and an
// assignment are there, /metrics exports the pinned names.
TEST_F(ConsumeLoopTest, OperationsEndpoints) {
  WorkerProcess worker(db_, broker_.bootstrap());
  ASSERT_TRUE(wait_until([&] { return worker.http_get("/readyz").first == 200; }, 30s)) << worker.process().log();
  EXPECT_EQ(worker.http_get("/healthz").first, 200);
  produce_events(0, 1, 1);
  ASSERT_GE(producer_.send(kOutreach, "k", "not json"), 0);
  ASSERT_TRUE(wait_processed(1));
  ASSERT_TRUE(wait_until([&] { return db_.count("SELECT count(*) FROM dead_letters") == 1; }, 30s));
  std::string metrics = worker.http_get("/metrics").second;
  for (const char* name : {"crm_worker_build_info", "crm_worker_events_total", "crm_worker_event_apply_seconds",
                           "crm_worker_dead_letters_total"}) {
    EXPECT_NE(metrics.find(std::string("# TYPE ") + name), std::string::npos) << name;
  }
  EXPECT_TRUE(wait_until([&] {
    return worker.http_get("/metrics").second.find("crm_worker_kafka_consumer_lag{") != std::string::npos;
  }, 15s));
}

// Tables filled from empty get statistics without waiting for autovacuum:
// the daemon, as production's runtime role (which owns no table), has the
// timeline analysed once it has grown past its last analysis.
TEST(ConsumeLoopStatistics, GrowingTablesAreAnalysedUnderTheRuntimeRole) {
  DevBrokerProcess broker(1, 2);
  TestDatabase db(DatabaseOptions{.pg_dir = "", .roles = true});
  // Autovacuum would analyse the table on its own after 50 changes (and then
  // the daemon's threshold is far away): keep it out of the way, so that
  // last_analyze below can only be the daemon's doing.
  db.scalar("ALTER TABLE outreach_activities SET (autovacuum_enabled = false)");
  Producer producer(broker.bootstrap());
  WorkerProcess worker(db, broker.bootstrap());
  const int events = 1200;  // more than the 1,000 changes an analysis waits for
  for (int i = 0; i < events; ++i) {
    const std::string pid = "p" + std::to_string(i % 300);
    ASSERT_GE(producer.send(kOutreach, pid,
                            discovered_event("stats-" + std::to_string(i), pid, "N", event_time(i))),
              0);
  }
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == events; }, 60s))
      << worker.process().log();
  // The worker's role (in its URL) does not own the table.
  const std::string url = db.url();
  const size_t from = url.find("://") + 3;
  const std::string runtime = url.substr(from, url.find_first_of(":@", from) - from);
  ASSERT_FALSE(runtime.empty());
  EXPECT_NE(db.scalar("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'outreach_activities'"),
            runtime);
  // last_analyze is set by ANALYZE only, never by autovacuum.
  EXPECT_TRUE(wait_until([&] {
    return !db.scalar("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'outreach_activities'").empty();
  }, 40s)) << worker.process().log();
}

// The database refuses an event, with a transient error, while the table
// `refuse` names it; it names `first` to begin with.
void refuse_events_named_in_a_table(const TestDatabase& db, const std::string& first) {
  db.scalar("CREATE TABLE refuse (event_id text PRIMARY KEY)");
  db.scalar(R"(CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM refuse WHERE event_id = NEW.event_id) THEN
    RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN NEW;
END $$)");
  db.scalar("CREATE TRIGGER refuse BEFORE INSERT ON processed_events FOR EACH ROW EXECUTE FUNCTION refuse_event()");
  auto c = db.connect();
  pqxx::work tx(*c);
  tx.exec_params0("INSERT INTO refuse VALUES ($1)", first);
  tx.commit();
}

// `events` discovered events, "<prefix><i>" each for a prospect p<i> of its
// own.
void produce_one_per_prospect(Producer& producer, const std::string& prefix, int events) {
  for (int i = 0; i < events; ++i) {
    const std::string pid = "p" + std::to_string(i);
    ASSERT_GE(producer.send(kOutreach, pid, discovered_event(prefix + std::to_string(i), pid, "N", event_time(i))), 0);
  }
}

// Lanes (database.pool_size, 2 by default): a chunk is applied as
// transactions side by side. When one lane keeps failing, the others are
// committed, but no offset at or past its messages is: a worker killed then
// loses nothing, the next one applies them.
TEST(ConsumeLoopLanes, AFailingLaneHoldsItsPartitionsOffsetsBack) {
  DevBrokerProcess broker(1, 1);  // one partition: its messages go to both lanes
  TestDatabase db;
  refuse_events_named_in_a_table(db, "lane-50");
  Producer producer(broker.bootstrap());
  const int events = 100;  // one chunk, each for a prospect of its own
  ASSERT_NO_FATAL_FAILURE(produce_one_per_prospect(producer, "lane-", events));
  {
    WorkerProcess worker(db, broker.bootstrap());
    ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") > 0; }, 60s))
        << worker.process().log();
    // Past a flush slice (1 s) and an offset commit: what the worker stores
    // while it retries is committed.
    std::this_thread::sleep_for(3s);
    const long long partial = db.count("SELECT count(*) FROM processed_events");
    EXPECT_GT(partial, 0);
    EXPECT_LT(partial, events);  // the lane with lane-50 is not
    EXPECT_EQ(db.count("SELECT count(*) FROM processed_events WHERE event_id = 'lane-50'"), 0);
    worker.process().signal(SIGKILL);
    worker.process().wait(10s);
  }
  db.scalar("DELETE FROM refuse");
  WorkerProcess again(db, broker.bootstrap());
  EXPECT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == events; }, 60s))
      << again.process().log();
  EXPECT_EQ(db.count("SELECT count(*) FROM prospects"), events);
}

// The guard's row of a partition (db/consume_guard.h) is released as far as
// its messages are applied, even when lanes fail round after round. With
// lane-50 refused, 256 messages of one partition go: round 1, evens and
// odds, the odds (up to 255) commit; round 2, the evens split again, 0, 4,
// 8 ... commit and 2, 6 ... 50 ... fail; round 3, 6, 14 ... commit; round 4
// (32 messages, one transaction) fails until lane-50 is let through. A row
// left starting anywhere a later release does not start (at 1 after round
// 2, at 99 or 255 at the end) would never be released: a worker dying after
// that makes the next one take the messages past it that were not yet
// committed to Kafka for a dead worker's, one at a time.
TEST(ConsumeLoopLanes, OffsetsAppliedPastAFailedLaneAreReleasedWithIt) {
  DevBrokerProcess broker(1, 1);
  TestDatabase db;
  refuse_events_named_in_a_table(db, "lane-50");
  Producer producer(broker.bootstrap());
  const int events = 256;
  ASSERT_NO_FATAL_FAILURE(produce_one_per_prospect(producer, "lane-", events));
  // A linger long enough for the first batch to hold all 256.
  WorkerProcess worker(db, broker.bootstrap(), {}, "[consumer]\nbatch_max_wait = \"2s\"\n");
  // Rounds 1 to 3 committed: all but the 32 of round 4.
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == events - 32; }, 60s))
      << db.count("SELECT count(*) FROM processed_events") << " applied\n" << worker.process().log();
  EXPECT_EQ(db.count("SELECT count(*) FROM processed_events WHERE event_id = 'lane-50'"), 0);
  db.scalar("DELETE FROM refuse");
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == events; }, 60s))
      << worker.process().log();
  EXPECT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM consumer_inflight") == 0; }, 10s))
      << db.scalar("SELECT string_agg(first_offset || '..' || last_offset, ', ') FROM consumer_inflight");
}

// A worker that stops while a batch it recorded keeps failing gives its
// guard row up (db/consume_guard.h): stopping alive is no death, and the
// next owner must not take the batch for a dead worker's. After each failed
// try the offsets are recorded again before the next (a record committed
// asynchronously may be lost with the server); stopping between two tries
// once left the row behind, and the next owner applied every message of it
// on its own, one transaction each, as after a death.
TEST(ConsumeLoopGuard, StoppingWhileABatchKeepsFailingLeavesNoGuardRow) {
  DevBrokerProcess broker(1, 1);
  TestDatabase db;
  refuse_events_named_in_a_table(db, "stop-5");
  Producer producer(broker.bootstrap());
  const int events = 10;
  ASSERT_NO_FATAL_FAILURE(produce_one_per_prospect(producer, "stop-", events));
  {
    // One lane, so the whole batch fails with stop-5; a short drain.
    WorkerProcess worker(db, broker.bootstrap(), {},
                         "[consumer]\ndrain_timeout = \"2s\"\n[database]\npool_size = 1\n");
    ASSERT_TRUE(wait_until([&] {
      return worker.process().log().find("batch not applied, retrying") != std::string::npos;
    }, 60s)) << worker.process().log();
    ASSERT_GT(db.count("SELECT count(*) FROM consumer_inflight"), 0);
    worker.process().signal(SIGTERM);
    const std::optional<int> code = worker.process().wait(30s);
    ASSERT_TRUE(code.has_value()) << worker.process().log();
    EXPECT_EQ(*code, 0) << worker.process().log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM processed_events WHERE event_id = 'stop-5'"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM consumer_inflight"), 0)
      << db.scalar("SELECT string_agg(first_offset || '..' || last_offset, ', ') FROM consumer_inflight");
  db.scalar("DELETE FROM refuse");
  WorkerProcess again(db, broker.bootstrap());
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == events; }, 60s))
      << again.process().log();
  EXPECT_EQ(again.process().log().find("began and never finished"), std::string::npos) << again.process().log();
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 0);
}

}  // namespace
}  // namespace crm::test
