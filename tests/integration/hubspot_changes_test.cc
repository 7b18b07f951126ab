// Changes made in HubSpot flow back by SPEC.md §6's rule, against the real
// PostgreSQL: HubSpot wins for the sales fields people set on deals (stage,
// amount, close date) when its change is newer than the web app's write and
// than every other change of the field; the local side owns everything
// else; a change for an object no row knows yet takes effect when the id is
// written back; and applying a change never queues a sync job (no
// ping-pong). Each scenario also runs in the order that breaks naive code.

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "daemon/applier.h"
#include "db/projections.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {
namespace {

// The deal columns a HubSpot change may move, and the web app's updated_at.
constexpr const char* kDealRow =
    "SELECT concat_ws('|', stage, amount, close_date, stage_changed_at, amount_changed_at,"
    " close_date_changed_at, updated_at) FROM deals WHERE id = ";

class HubspotChangesTest : public ::testing::Test {
 protected:
  std::unique_ptr<TestDatabase> db_ = std::make_unique<TestDatabase>();
  std::unique_ptr<db::Database> conn_ = std::make_unique<db::Database>(db_->conninfo());
  db::ProjectionOptions options_ = db::projection_options(Config{});
  int next_ = 0;

  void fresh_database() {
    conn_.reset();
    db_ = std::make_unique<TestDatabase>();
    conn_ = std::make_unique<db::Database>(db_->conninfo());
  }

  HistoryEvent ev(const std::string& type, const std::string& time, const std::string& data) {
    return cloud_event("e" + std::to_string(next_++), type, time, data);
  }
  // A change of `property` of HubSpot deal `object_id` made at `occurred`;
  // `value` is JSON ("\"x\"", "null"). Published at at_hour(20), after all of
  // them: the rule reads occurred_at, not the event's time.
  HistoryEvent change(const std::string& object_id, const std::string& property,
                      const std::string& value, const std::string& occurred,
                      const std::string& object_type = "deal") {
    HistoryEvent e = ev("hubspot.object.changed", at_hour(20),
                        R"({"object_type":")" + object_type + R"(","object_id":")" + object_id +
                            R"(","property":")" + property + R"(","value":)" + value +
                            R"(,"occurred_at":")" + occurred + "\"}");
    e.topic = "crm.sync.jobs";
    e.key = object_id;
    return e;
  }
  // The web app's row, written at `updated_at`.
  void web_app_deal(const std::string& id, const std::string& hubspot_id, const std::string& updated_at,
                    const std::string& prospect = "") {
    sql("INSERT INTO deals (id, prospect_id, name, stage, amount, close_date, hubspot_deal_id, updated_at)"
        " VALUES ('" + id + "', " + (prospect.empty() ? "NULL" : "'" + prospect + "'") +
        ", 'Renewal', 'qualification', 500, '2026-05-31', " +
        (hubspot_id.empty() ? "NULL" : "'" + hubspot_id + "'") + ", '" + updated_at + "')");
  }
  void apply(const std::vector<HistoryEvent>& events, size_t batch = 1) {
    Status s = apply_events(*conn_, events, batch, options_);
    ASSERT_TRUE(s.is_ok()) << s.reason() << ": " << s.message();
  }
  void sql(const std::string& statement) const {
    auto c = db_->connect();
    pqxx::work tx(*c);
    tx.exec0(statement);
    tx.commit();
  }
  std::string q(const std::string& query) const { return db_->scalar(query); }
  long long n(const std::string& query) const { return db_->count(query); }
  std::string deal(const std::string& id) const { return q(kDealRow + ("'" + id + "'")); }
  // "2026-03-01T12:00:00Z" as PostgreSQL prints a timestamptz in the session.
  std::string ts(const std::string& time) const { return q("SELECT '" + time + "'::timestamptz::text"); }
};

TEST_F(HubspotChangesTest, AChangeNewerThanTheWebAppsWriteWinsAndLeavesUpdatedAtAlone) {
  web_app_deal("d1", "h1", at_hour(10));
  apply({change("h1", "dealstage", R"("closedwon")", at_hour(12)),
         change("h1", "amount", R"("1500.50")", at_hour(12)),
         change("h1", "closedate", R"("1782777600000")", at_hour(12, 30))});
  EXPECT_EQ(deal("d1"), "closed_won|1500.50|2026-06-30|" + ts(at_hour(12)) + "|" + ts(at_hour(12)) + "|" +
                            ts(at_hour(12, 30)) + "|" + ts(at_hour(10)));
  // The timeline has them, as every event.
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE type = 'hubspot.object.changed'"
              " AND entity_type = 'hubspot' AND entity_id = 'deal:h1' AND prospect_id IS NULL"),
            3);
  EXPECT_EQ(n("SELECT count(*) FROM processed_events"), 3);
}

TEST_F(HubspotChangesTest, AChangeOlderThanTheWebAppsWriteLoses) {
  web_app_deal("d1", "h1", at_hour(10));
  const std::string before = deal("d1");
  apply({change("h1", "dealstage", R"("closedlost")", at_hour(9)),
         change("h1", "amount", R"("1")", at_hour(9, 59)),
         change("h1", "closedate", R"("2026-07-01")", at_hour(10))});  // the same instant is not newer
  EXPECT_EQ(deal("d1"), before);
  EXPECT_EQ(deal("d1"), "qualification|500|2026-05-31|" + ts(at_hour(10)));
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities"), 3);
  // A newer one after them still wins, alone.
  apply({change("h1", "amount", R"("2000")", at_hour(11))});
  EXPECT_EQ(deal("d1"), "qualification|2000|2026-05-31|" + ts(at_hour(11)) + "|" + ts(at_hour(10)));
}

TEST_F(HubspotChangesTest, OutOfOrderChangesOfAFieldEndWithTheNewestInEveryOrder) {
  std::vector<HistoryEvent> changes = {change("h1", "amount", R"("100")", at_hour(11)),
                                       change("h1", "amount", R"("300")", at_hour(13)),
                                       change("h1", "amount", R"("200")", at_hour(12)),
                                       change("h1", "closedate", R"("2026-07-01")", at_hour(12)),
                                       change("h1", "closedate", R"("")", at_hour(14)),  // cleared
                                       change("h1", "closedate", R"("2026-08-01")", at_hour(13))};
  std::sort(changes.begin(), changes.end(),
            [](const HistoryEvent& a, const HistoryEvent& b) { return a.id < b.id; });
  int orders = 0;
  do {
    // Every order of the amounts, with the close dates in the same positions.
    fresh_database();
    web_app_deal("d1", "h1", at_hour(10));
    apply(changes);
    ASSERT_EQ(deal("d1"), "qualification|300|" + ts(at_hour(13)) + "|" + ts(at_hour(14)) + "|" + ts(at_hour(10)))
        << "order " << orders;
    ++orders;
  } while (std::next_permutation(changes.begin(), changes.begin() + 3,
                                 [](const HistoryEvent& a, const HistoryEvent& b) { return a.id < b.id; }) &&
           orders < 24);
  EXPECT_EQ(orders, 6);
  // All in one batch, and again (duplicates): the same.
  fresh_database();
  web_app_deal("d1", "h1", at_hour(10));
  apply(changes, changes.size());
  apply(changes, 2);
  EXPECT_EQ(deal("d1"), "qualification|300|" + ts(at_hour(13)) + "|" + ts(at_hour(14)) + "|" + ts(at_hour(10)));
}

TEST_F(HubspotChangesTest, TheStageCompetesWithStageChangedEventsByTime) {
  Config config;
  config.hubspot.deal_stages["negotiation"] = "decisionmakerboughtin";
  options_ = db::projection_options(config);
  auto history = [&] {
    next_ = 0;
    return std::vector<HistoryEvent>{
        ev("crm.deal.stage_changed", at_hour(5), R"({"deal_id":"d1","stage":"proposal"})"),
        change("h1", "dealstage", R"("decisionmakerboughtin")", at_hour(6)),  // ours: negotiation
        ev("crm.deal.stage_changed", at_hour(7), R"({"deal_id":"d1","stage":"qualification","amount":700})"),
        change("h1", "dealstage", R"("appointmentscheduled")", at_hour(6, 30)),  // older than at_hour(7)
        change("h1", "dealstage", R"("")", at_hour(8)),                         // cleared: no stage
        change("h1", "amount", R"("900")", at_hour(7, 30))};
  };
  const std::string expected =
      "qualification|900|2026-05-31|" + ts(at_hour(7)) + "|" + ts(at_hour(7, 30)) + "|" + ts(at_hour(1));

  // In order: the HubSpot change at at_hour(6) beats the event at at_hour(5), mapped back.
  web_app_deal("d1", "h1", at_hour(1));
  std::vector<HistoryEvent> events = history();
  apply({events[0]});
  EXPECT_EQ(q("SELECT concat_ws('|', stage, stage_changed_at = '" + at_hour(5) + "') FROM deals"), "proposal|t");
  apply({events[1]});
  EXPECT_EQ(q("SELECT concat_ws('|', stage, stage_changed_at = '" + at_hour(6) + "') FROM deals"), "negotiation|t");
  apply(events);
  EXPECT_EQ(deal("d1"), expected);

  // Newest first, and all in one batch: the same.
  for (size_t batch : {size_t{1}, size_t{6}}) {
    fresh_database();
    web_app_deal("d1", "h1", at_hour(1));
    events = history();
    std::reverse(events.begin(), events.end());
    apply(events, batch);
    EXPECT_EQ(deal("d1"), expected) << "batch " << batch;
  }

  // A HubSpot stage newer than every event wins; unmapped, it is kept as is.
  apply({change("h1", "dealstage", R"("appointmentscheduled")", at_hour(9))});
  EXPECT_EQ(q("SELECT concat_ws('|', stage, stage_changed_at = '" + at_hour(9) + "') FROM deals"),
            "appointmentscheduled|t");
}

TEST_F(HubspotChangesTest, AChangeForAnUnknownIdWaitsForTheWriteBack) {
  apply({ev("crm.email.sent", at_hour(1), R"({"email_id":"m9","prospect_id":"p9"})")});
  web_app_deal("d9", "", at_hour(10), "p9");
  sql("UPDATE prospects SET deal_value = 500");
  apply({change("h9", "amount", R"("2500")", at_hour(12)),
         change("h9", "dealstage", R"("closedlost")", at_hour(12)),
         change("h9", "amount", R"("1000")", at_hour(9))});  // older than the web app's write
  EXPECT_EQ(deal("d9"), "qualification|500|2026-05-31|" + ts(at_hour(10)));
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE entity_id = 'deal:h9'"), 3);

  // What the sync executor does: write the id back, then reproject.
  auto write_back = [&] {
    auto c = db_->connect();
    pqxx::work tx(*c);
    tx.exec0("UPDATE deals SET hubspot_deal_id = 'h9', hubspot_sync_status = 'synced' WHERE id = 'd9'");
    db::reproject_hubspot_changes(tx, "deal", {"d9", "d9", "no-such-deal"}, options_);
    tx.commit();
  };
  write_back();
  EXPECT_EQ(deal("d9"), "closed_lost|2500|2026-05-31|" + ts(at_hour(12)) + "|" + ts(at_hour(12)) + "|" + ts(at_hour(10)));
  // The prospect's deal value follows; its status does not (HubSpot's close
  // moves the deal only).
  EXPECT_EQ(q("SELECT concat_ws('|', deal_value, sales_status) FROM prospects WHERE id = 'p9'"), "2500|contacted");
  EXPECT_EQ(n("SELECT count(*) FROM deals"), 1);
  // Again (a retried write-back): nothing moves.
  const std::string after = outreach_tables(*db_);
  write_back();
  EXPECT_EQ(outreach_tables(*db_), after);
  // It gives what applying the changes after the write-back gives.
  fresh_database();
  next_ = 0;
  apply({ev("crm.email.sent", at_hour(1), R"({"email_id":"m9","prospect_id":"p9"})")});
  web_app_deal("d9", "h9", at_hour(10), "p9");
  apply({change("h9", "amount", R"("1000")", at_hour(9)), change("h9", "dealstage", R"("closedlost")", at_hour(12)),
         change("h9", "amount", R"("2500")", at_hour(12))});
  EXPECT_EQ(deal("d9"), "closed_lost|2500|2026-05-31|" + ts(at_hour(12)) + "|" + ts(at_hour(12)) + "|" + ts(at_hour(10)));
  EXPECT_EQ(q("SELECT deal_value FROM prospects WHERE id = 'p9'"), "2500");
}

TEST_F(HubspotChangesTest, ReprojectingCompaniesAndContactsChangesNothing) {
  sql("INSERT INTO companies (id, name, hubspot_company_id, updated_at) VALUES ('co1', 'Acme', 'hc1', '" + at_hour(1) + "')");
  apply({change("hc1", "name", R"("Acme Corp")", at_hour(5), "company")});
  auto c = db_->connect();
  pqxx::work tx(*c);
  const std::string before = outreach_tables(*db_);
  db::reproject_hubspot_changes(tx, "company", {"co1"}, options_);
  db::reproject_hubspot_changes(tx, "contact", {"ct1"}, options_);
  db::reproject_hubspot_changes(tx, "deal", {}, options_);
  EXPECT_THROW(db::reproject_hubspot_changes(tx, "ticket", {"x"}, options_), std::invalid_argument);
  tx.commit();
  EXPECT_EQ(outreach_tables(*db_), before);
  EXPECT_EQ(q("SELECT name FROM companies"), "Acme");
}

TEST_F(HubspotChangesTest, PropertiesTheLocalSideOwnsHaveNoEffect) {
  web_app_deal("d1", "h1", at_hour(1), "p1");
  sql("INSERT INTO companies (id, name, phone, hubspot_company_id, updated_at)"
      " VALUES ('co1', 'Acme', '+1 555', 'hc1', '" + at_hour(1) + "')");
  sql("INSERT INTO contacts (id, company_id, email, first_name, hubspot_contact_id, updated_at)"
      " VALUES ('ct1', 'co1', 'ada@acme.test', 'Ada', 'hk1', '" + at_hour(1) + "')");
  const std::string rows =
      "SELECT string_agg(r, E'\\n' ORDER BY r) FROM ("
      " SELECT to_jsonb(d)::text AS r FROM deals d UNION ALL SELECT to_jsonb(c)::text FROM companies c"
      " UNION ALL SELECT to_jsonb(k)::text FROM contacts k) x";
  const std::string before = q(rows);
  apply({change("h1", "dealname", R"("Renamed")", at_hour(5)),
         change("h1", "description", R"("")", at_hour(5)),
         change("h1", "hs_priority", R"("high")", at_hour(5)),
         change("h1", "hubspot_owner_id", R"("42")", at_hour(5)),
         change("h1", "Amount", R"("lots")", at_hour(5)),  // not the amount property: any text
         change("hc1", "name", R"("Acme Corp")", at_hour(5), "company"),
         change("hc1", "phone", "null", at_hour(5), "company"),
         change("hc1", "amount", R"("12")", at_hour(5), "company"),
         change("hk1", "email", R"("ada@elsewhere.test")", at_hour(5), "contact"),
         change("hk1", "closedate", R"("soon")", at_hour(5), "contact"),
         change("h-none", "dealname", R"("x")", at_hour(5))});
  EXPECT_EQ(q(rows), before);
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities"), 11);
  EXPECT_EQ(n("SELECT count(*) FROM prospects"), 0);  // a deal's prospect is not created by HubSpot
}

TEST_F(HubspotChangesTest, ApplyingAChangeNeverQueuesASyncJob) {
  web_app_deal("d1", "h1", at_hour(1));
  sql("INSERT INTO companies (id, name, hubspot_company_id) VALUES ('co1', 'Acme', 'hc1')");
  apply({change("h1", "dealstage", R"("closedwon")", at_hour(5)), change("h1", "amount", R"("10")", at_hour(5)),
         change("h1", "closedate", R"("2026-09-01")", at_hour(5)), change("hc1", "name", R"("A")", at_hour(5), "company"),
         change("h-unknown", "amount", R"("5")", at_hour(5))},
        5);
  EXPECT_EQ(q("SELECT stage FROM deals"), "closed_won");
  EXPECT_EQ(n("SELECT count(*) FROM sync_queue"), 0);
  // The web app's request is the one source of jobs, in the same batch too.
  apply({change("h1", "amount", R"("20")", at_hour(6)),
         ev("crm.sync.requested", at_hour(6), R"({"entity_type":"deal","entity_id":"d1","operation":"upsert"})")},
        2);
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', entity_type, entity_id, operation), ',') FROM sync_queue"),
            "deal|d1|upsert");
}

TEST_F(HubspotChangesTest, ContractViolationsAreDeadLettersAndRedeliveriesDuplicates) {
  web_app_deal("d1", "h1", at_hour(1));
  std::vector<HistoryEvent> events = {
      change("h1", "amount", R"("lots")", at_hour(5)),
      change("h1", "closedate", R"("next week")", at_hour(5)),
      change("h1", "amount", R"("10")", "yesterday"),
      change("h1", "amount", R"("10")", at_hour(5), "ticket"),
      ev("hubspot.object.changed", at_hour(5), R"({"object_type":"deal","property":"amount","value":"1","occurred_at":")" + at_hour(5) + "\"}"),
      change("h1", "amount", R"("10")", at_hour(5))};
  std::vector<WorkItem> items;
  for (size_t i = 0; i < events.size(); ++i) items.push_back(work_item(events[i], static_cast<long long>(i)));
  items.push_back(work_item(events.back(), 99));  // delivered twice
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_batch(*conn_, items, options_, &results).is_ok());
  std::vector<std::string> reasons;
  for (const auto& r : results) reasons.push_back(r.outcome == Outcome::kDeadLetter ? r.reason : "-");
  EXPECT_EQ(reasons, (std::vector<std::string>{"bad_value", "bad_value", "bad_time", "bad_value",
                                               "missing_field", "-", "-"}));
  EXPECT_EQ(results[5].outcome, Outcome::kApplied);
  EXPECT_EQ(results[6].outcome, Outcome::kDuplicate);
  EXPECT_EQ(q("SELECT error FROM dead_letters WHERE \"offset\" = 0"),
            "data.value is not a decimal number (deal property amount)");
  EXPECT_EQ(n("SELECT count(*) FROM dead_letters"), 5);
  EXPECT_EQ(q("SELECT amount FROM deals"), "10");
}

// The invariant for HubSpot changes alone, with the write-back in the
// middle: a seeded history's changes in time order, reversed, and cut into
// batches end in the same tables.
TEST_F(HubspotChangesTest, AnyOrderOfChangesAndStageEventsGivesOneFinalState) {
  std::vector<HistoryEvent> events;
  for (const HistoryEvent& e : outreach_history(20261121, {.prospects = 9})) {
    if (e.type == "hubspot.object.changed" || e.type == "crm.deal.stage_changed") events.push_back(e);
  }
  ASSERT_GT(events.size(), 10u);
  const HistoryShape shape{.prospects = 9};
  std::string reference;
  {
    fresh_database();
    seed_web_app_rows(*db_, shape);
    apply(in_time_order(events));
    reference = outreach_tables(*db_);
  }
  std::vector<HistoryEvent> reversed = in_time_order(events);
  std::reverse(reversed.begin(), reversed.end());
  for (size_t batch : {size_t{1}, size_t{4}, reversed.size()}) {
    fresh_database();
    seed_web_app_rows(*db_, shape);
    apply(reversed, batch);
    EXPECT_EQ(outreach_tables(*db_), reference) << "batch " << batch;
  }
  // Some changes were applied, some lost to the web app's write.
  fresh_database();
  seed_web_app_rows(*db_, shape);
  apply(reversed, 8);
  EXPECT_GT(n("SELECT count(*) FROM deals WHERE amount_changed_at IS NOT NULL OR close_date_changed_at IS NOT NULL"), 0);
}

}  // namespace
}  // namespace crm::test
