// The applier against the real PostgreSQL, without Kafka: the same distinct
// events of every outreach type applied in any order, with duplicates, in
// any batch cuts, must give byte-identical tables to each event applied once
// in time order (SPEC.md §5, the invariant), and a failing event must not
// spoil its batch.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "daemon/applier.h"
#include "daemon/consume_loop.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {
namespace {

// Every table the outreach events feed, as text, without the columns that
// record when the worker did something rather than what happened
// (created_at, updated_at, processed_at, the timeline's serial id) and the
// Kafka position of each event (a permutation delivers it elsewhere).
std::string tables(const TestDatabase& db) {
  struct Table {
    const char* name;
    const char* volatile_columns;
  };
  static constexpr Table kTables[] = {
      {"prospects", "{created_at,updated_at}"},
      {"email_activities", "{created_at,updated_at}"},
      {"sms_activities", "{created_at,updated_at}"},
      {"call_activities", "{created_at,updated_at}"},
      {"deals", "{created_at,updated_at}"},
      {"customers", "{created_at,updated_at}"},
      {"subscriptions", "{created_at,updated_at}"},
      {"pipeline_stages", "{}"},
      {"followups", "{created_at,updated_at}"},
      {"notifications", "{created_at,updated_at,next_attempt_at}"},
      {"outreach_activities", "{id,created_at}"},
      {"processed_events", "{processed_at,topic,partition,offset}"},
  };
  std::string out;
  for (const Table& t : kTables) {
    auto conn = db.connect();
    pqxx::work tx(*conn);
    out += std::string("== ") + t.name + "\n";
    // The table name is one of the constants above, not input.
    for (const auto& row : tx.exec_params(std::string("SELECT (to_jsonb(x) - $1::text[])::text AS r FROM ") +
                                          t.name + " x ORDER BY r",
                                          t.volatile_columns)) {
      out += row[0].c_str();
      out += '\n';
    }
  }
  return out;
}

WorkItem item(const HistoryEvent& e, long long offset) {
  queue::RawMessage m;
  m.origin = {e.topic, 0, offset, -1};
  m.key = e.key;
  m.value = e.value;
  Config config;
  auto items = decode_message(m, config, decode_limits(config));
  return std::move(items.at(0));
}

WorkItem item(const std::string& json, long long offset) {
  HistoryEvent e;
  e.topic = "crm.outreach.events";
  e.value = json;
  return item(e, offset);
}

db::ProjectionOptions options() {
  Config config;
  config.slack.webhook_url = Secret("https://hooks.slack.invalid/T/B/x");
  config.lead_score.threshold = 40;
  return db::projection_options(config);
}

Status apply_in_batches(db::Database& db, const std::vector<HistoryEvent>& events, size_t batch) {
  for (size_t i = 0; i < events.size(); i += batch) {
    std::vector<WorkItem> items;
    for (size_t j = i; j < std::min(events.size(), i + batch); ++j) {
      items.push_back(item(events[j], static_cast<long long>(j)));
    }
    std::vector<ItemResult> results;
    if (Status s = apply_batch(db, items, options(), &results); !s) return s;
    for (size_t k = 0; k < results.size(); ++k) {
      if (results[k].outcome == Outcome::kDeadLetter) {
        return Status::permanent(results[k].reason, results[k].error + " in " + events[i + k].value);
      }
    }
  }
  return Status::ok();
}

// The reference state: each distinct event once, in time order (ties by id),
// one event per transaction.
std::string reference_state(const std::vector<HistoryEvent>& events) {
  TestDatabase db;
  db::Database conn(db.conninfo());
  Status s = apply_in_batches(conn, in_time_order(events), 1);
  EXPECT_TRUE(s.is_ok()) << s.reason() << ": " << s.message();
  return tables(db);
}

TEST(Applier, AnyOrderDuplicatesAndBatchCutsGiveOneFinalState) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::printf("applier invariant seed %u\n", seed);
  std::vector<HistoryEvent> events = outreach_history(seed);
  std::printf("%zu distinct events\n", events.size());
  const std::string reference = reference_state(events);

  std::mt19937 rng(seed);
  for (int round = 0; round < 4; ++round) {
    std::vector<HistoryEvent> shuffled = events;
    // Duplicates: some events 2-4 times, one 40 times (as SendGrid does).
    for (int d = 0; d < 15; ++d) {
      const HistoryEvent& e = events[rng() % events.size()];
      for (unsigned k = 1 + rng() % 3; k > 0; --k) shuffled.push_back(e);
    }
    for (int k = 0; k < 39; ++k) shuffled.push_back(events[rng() % events.size()]);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    // Round 0 is the worst order of all: newest first.
    if (round == 0) {
      shuffled = in_time_order(events);
      std::reverse(shuffled.begin(), shuffled.end());
    }
    size_t batch = std::vector<size_t>{1, 7, 50, 500}[round];
    TestDatabase db;
    db::Database conn(db.conninfo());
    ASSERT_TRUE(apply_in_batches(conn, shuffled, batch).is_ok());
    const std::string state = tables(db);
    EXPECT_EQ(state, reference) << "round " << round << ", batch " << batch;
    if (state != reference) break;
  }
}

TEST(Applier, AFailingEventIsDeadLetteredAndItsBatchStillApplies) {
  TestDatabase db;
  db::Database conn(db.conninfo());
  std::vector<WorkItem> items = {
      item(discovered_event("a", "p1", "Ada", "2026-01-01T00:00:00Z"), 0),
      item(R"({"specversion":"1.0","id":"b","source":"t","type":"crm.prospect.discovered","time":"2026-01-01T00:00:00Z","data":{"prospect_id":"p2"}})", 1),
      item("garbage", 2),
      item(discovered_event("c", "p3", "Cy", "2026-01-01T00:00:00Z"), 3),
      item(discovered_event("a", "p1", "Ada", "2026-01-01T00:00:00Z"), 4),
  };
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_batch(conn, items, options(), &results).is_ok());
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0].outcome, Outcome::kApplied);
  EXPECT_EQ(results[1].outcome, Outcome::kDeadLetter);
  EXPECT_EQ(results[1].reason, "missing_field");
  EXPECT_EQ(results[2].outcome, Outcome::kDeadLetter);
  EXPECT_EQ(results[2].reason, "not_json");
  EXPECT_EQ(results[3].outcome, Outcome::kApplied);
  EXPECT_EQ(results[4].outcome, Outcome::kDuplicate);
  EXPECT_EQ(db.count("SELECT count(*) FROM prospects"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM processed_events"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 2);
  EXPECT_EQ(db.scalar("SELECT id FROM dead_letters WHERE reason = 'missing_field'"), "crm.outreach.events:0:1");

  // The same batch again (a redelivery): nothing changes, the dead letters
  // are recognised, not doubled.
  std::string before = tables(db);
  ASSERT_TRUE(apply_batch(conn, items, options(), &results).is_ok());
  EXPECT_EQ(results[0].outcome, Outcome::kDuplicate);
  EXPECT_FALSE(results[1].new_dead_letter);
  EXPECT_EQ(tables(db), before);
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 2);
}

// Hostile-looking but valid values are applied byte for byte.
TEST(Applier, HostileValuesRoundTripExactly) {
  TestDatabase db;
  db::Database conn(db.conninfo());
  const std::string hostile = R"('); DROP TABLE prospects;--\n{\"level\":\"error\"} \u202e\u0007)";
  std::vector<WorkItem> items = {item(discovered_event("h1", "p-h", hostile, "2026-01-01T00:00:00Z"), 0)};
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_batch(conn, items, options(), &results).is_ok());
  ASSERT_EQ(results[0].outcome, Outcome::kApplied) << results[0].error;
  EXPECT_EQ(db.scalar("SELECT name FROM prospects WHERE id = 'p-h'"),
            std::string("'); DROP TABLE prospects;--\n{\"level\":\"error\"} \u202e\a"));
}

}  // namespace
}  // namespace crm::test
