// The applier against the real PostgreSQL, without Kafka: the same distinct
// events applied in any order, with duplicates, in any batch cuts, must give
// byte-identical tables (SPEC.md §5, the invariant), and a failing event
// must not spoil its batch.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "daemon/applier.h"
#include "daemon/consume_loop.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

std::string tables(const TestDatabase& db) {
  return db.scalar("SELECT string_agg(concat_ws('|', id, name, email, phone, company, source, category,"
                   " urgency, sales_status, email_status, profile_updated_at), E'\\n' ORDER BY id) FROM prospects") +
         "\n" +
         db.scalar("SELECT string_agg(concat_ws('|', prospect_id, stage, stage_date, notes), E'\\n'"
                   " ORDER BY prospect_id, stage) FROM pipeline_stages") +
         "\n" +
         db.scalar("SELECT string_agg(concat_ws('|', event_id, prospect_id, type, occurred_at, details::text),"
                   " E'\\n' ORDER BY event_id) FROM outreach_activities") +
         "\n" + db.scalar("SELECT string_agg(event_id, ',' ORDER BY event_id) FROM processed_events");
}

WorkItem item(const std::string& json, long long offset) {
  queue::RawMessage m;
  m.origin = {"crm.outreach.events", 0, offset, -1};
  m.value = json;
  Config config;
  auto items = decode_message(m, config, decode_limits(config));
  return std::move(items.at(0));
}

// A seeded history: discovered events for a few prospects with fields that
// come and go, so "newest value per field" matters.
std::vector<std::string> history(unsigned seed, int n) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  const char* fields[] = {"email", "phone", "company", "source", "category", "urgency"};
  for (int i = 0; i < n; ++i) {
    std::string extra;
    for (const char* f : fields) {
      if (rng() % 2) extra += std::string(",\"") + f + "\":\"" + f + "-" + std::to_string(rng() % 1000) + "\"";
    }
    char time[40];
    // Some events share a second, so the event-id tie-break is exercised.
    std::snprintf(time, sizeof time, "2026-02-%02dT%02d:00:%02dZ", 1 + int(rng() % 5), int(rng() % 24), int(rng() % 3));
    std::string pid = "p" + std::to_string(rng() % 4);
    out.push_back(discovered_event("ev-" + std::to_string(i), pid, "Name-" + std::to_string(rng() % 100),
                                   time, extra.substr(extra.empty() ? 0 : 1)));
  }
  return out;
}

Status apply_in_batches(db::Database& db, const std::vector<std::string>& events, size_t batch) {
  for (size_t i = 0; i < events.size(); i += batch) {
    std::vector<WorkItem> items;
    for (size_t j = i; j < std::min(events.size(), i + batch); ++j) items.push_back(item(events[j], static_cast<long long>(j)));
    std::vector<ItemResult> results;
    if (Status s = apply_batch(db, items, &results); !s) return s;
  }
  return Status::ok();
}

TEST(Applier, AnyOrderDuplicatesAndBatchCutsGiveOneFinalState) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::printf("applier invariant seed %u\n", seed);
  std::vector<std::string> events = history(seed, 60);

  // The reference: each distinct event once, in time order (ties by id).
  std::string reference;
  {
    TestDatabase db;
    db::Database conn(db.conninfo());
    std::vector<std::string> sorted = events;
    auto time_of = [](const std::string& e) { return e.substr(e.find("\"time\":\"") + 8, 20); };
    auto id_of = [](const std::string& e) { return e.substr(e.find("\"id\":\"") + 6, 8); };
    std::sort(sorted.begin(), sorted.end(), [&](const auto& a, const auto& b) {
      return std::make_pair(time_of(a), id_of(a)) < std::make_pair(time_of(b), id_of(b));
    });
    ASSERT_TRUE(apply_in_batches(conn, sorted, 1).is_ok());
    reference = tables(db);
  }
  std::mt19937 rng(seed);
  for (int round = 0; round < 4; ++round) {
    std::vector<std::string> shuffled = events;
    // Duplicates: some events 2-4 times, one 40 times.
    for (int d = 0; d < 15; ++d) {
      const std::string& e = events[rng() % events.size()];
      for (unsigned k = 1 + rng() % 3; k > 0; --k) shuffled.push_back(e);
    }
    for (int k = 0; k < 39; ++k) shuffled.push_back(events[round]);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    size_t batch = std::vector<size_t>{1, 7, 50, 500}[round];
    TestDatabase db;
    db::Database conn(db.conninfo());
    ASSERT_TRUE(apply_in_batches(conn, shuffled, batch).is_ok());
    EXPECT_EQ(tables(db), reference) << "round " << round << ", batch " << batch;
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
  ASSERT_TRUE(apply_batch(conn, items, &results).is_ok());
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
  ASSERT_TRUE(apply_batch(conn, items, &results).is_ok());
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
  ASSERT_TRUE(apply_batch(conn, items, &results).is_ok());
  ASSERT_EQ(results[0].outcome, Outcome::kApplied) << results[0].error;
  EXPECT_EQ(db.scalar("SELECT name FROM prospects WHERE id = 'p-h'"),
            std::string("'); DROP TABLE prospects;--\n{\"level\":\"error\"} \u202e\a"));
}

}  // namespace
}  // namespace crm::test
