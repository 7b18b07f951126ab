// The HubSpot sync executor (SPEC.md §5 sync_queue, §6 HubSpot) against the
// real PostgreSQL and the fake HubSpot: coalescing, companies first and
// their associations, a refused batch split down to its bad rows, retries
// and Retry-After, dead jobs and redrive, deletes, leases taken over (the
// old owner cannot overwrite, the new one reads back instead of pushing
// twice), the shared rate limit with two executors, slowing down when
// HubSpot says the budget is low, and kill -9 after HubSpot accepted a batch.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <thread>

#include <prometheus/text_serializer.h>

#include "daemon/logging.h"
#include "daemon/sync_executor.h"
#include "db/followups.h"
#include "db/sync.h"
#include "http/client.h"
#include "tests/harness/fake_hubspot.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kToken = "pat-canary-token-do-not-log";

std::string metrics_text(monitoring::Metrics& metrics) {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(metrics.registry()->Collect());
}

Answer status(int code, std::vector<std::pair<std::string, std::string>> headers = {},
              std::string body = R"({"status":"error","message":"try later","correlationId":"x","category":"RATE_LIMITS"})") {
  Answer a;
  a.status = code;
  a.headers = std::move(headers);
  a.body = std::move(body);
  return a;
}

class SyncTest : public ::testing::Test {
 protected:
  SyncTest() {
    log::set_level(log::Level::kError);
    config_.hubspot.base_url = hubspot_.base_url();
    config_.hubspot.token = Secret(kToken);
    config_.hubspot.timeout = Millis{1000};
    config_.retry.initial_backoff = Millis{10};
    config_.retry.max_backoff = Millis{50};
    config_.retry.max_attempts = 3;
  }

  SyncExecutor& executor() {
    if (!executor_) executor_ = std::make_unique<SyncExecutor>(config_, db_.conninfo(), metrics_, "test");
    return *executor_;
  }

  void sql(const std::string& statement) {
    auto c = db_.connect();
    pqxx::work tx(*c);
    tx.exec(statement);
    tx.commit();
  }
  void company(const std::string& id, const std::string& name) {
    sql("INSERT INTO companies (id, name, domain) VALUES ('" + id + "', '" + name + "', '" + id +
        ".example') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name");
  }
  void deal(const std::string& id, const std::string& company_id, const std::string& stage) {
    sql("INSERT INTO deals (id, company_id, name, stage, amount, close_date) VALUES ('" + id + "', '" +
        company_id + "', 'Deal " + id + "', '" + stage + "', 1500.50, '2026-12-01')");
  }
  void contact(const std::string& id, const std::string& company_id) {
    sql("INSERT INTO contacts (id, company_id, email, first_name) VALUES ('" + id + "', '" +
        company_id + "', '" + id + "@example.com', 'Ada')");
  }
  // The web app's request, through the real event path.
  void request(const std::string& type, const std::string& id, const std::string& op = "upsert",
               const std::string& time = "2026-03-01T09:00:00Z") {
    const HistoryEvent e = cloud_event("r" + std::to_string(next_++), "crm.sync.requested", time,
                                       R"({"entity_type":")" + type + R"(","entity_id":")" + id +
                                           R"(","operation":")" + op + R"("})");
    Status s = apply_events(conn_, {e}, 1, db::ProjectionOptions{});
    ASSERT_TRUE(s.is_ok()) << s.message();
  }

  SyncPass once() {
    Result<SyncPass> p = executor().run_once();
    EXPECT_TRUE(p.is_ok()) << (p ? "" : p.status().message());
    return p ? *p : SyncPass{};
  }
  // Runs passes until none claims anything; waits out retry delays up to
  // `patience`.
  SyncPass drain(std::chrono::milliseconds patience = 3s) {
    SyncPass total;
    const auto until = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < until) {
      const SyncPass p = once();
      total.claimed += p.claimed;
      total.completed += p.completed;
      total.retried += p.retried;
      total.failed += p.failed;
      total.requests += p.requests;
      if (!p.more) {
        if (db_.count("SELECT count(*) FROM sync_queue WHERE status IN ('pending', 'in_progress')") == 0) break;
        std::this_thread::sleep_for(20ms);
      }
    }
    return total;
  }
  std::string q(const std::string& s) const { return db_.scalar(s); }

  // Another worker's claim and outcome, by hand, each in its own transaction.
  std::vector<db::SyncJob> claim_as(const std::string& owner, Millis lease, int max_attempts = 3) {
    auto c = db_.connect();
    pqxx::work tx(*c);
    std::vector<db::SyncJob> jobs = db::claim_sync_jobs(tx, owner, lease, 100, max_attempts);
    tx.commit();
    return jobs;
  }
  std::vector<long long> record_as(const std::string& owner, const db::SyncJob& job,
                                   db::SyncOutcome::Kind kind, int max_attempts = 3) {
    db::SyncOutcome o;
    o.job = &job;
    o.kind = kind;
    o.error = "by hand";
    if (kind == db::SyncOutcome::Kind::kFailed) o.row_status = "failed";
    auto c = db_.connect();
    pqxx::work tx(*c);
    std::vector<long long> written = db::record_sync_outcomes(tx, owner, {o}, max_attempts);
    tx.commit();
    return written;
  }

  TestDatabase db_;
  db::Database conn_{db_.conninfo()};
  FakeHubspot hubspot_;
  Config config_;
  monitoring::Metrics metrics_{{}, {}};
  std::unique_ptr<SyncExecutor> executor_;
  int next_ = 0;
};

TEST_F(SyncTest, TenRequestsMakeOnePushOfTheLatestStateAndTheIdComesBack) {
  company("c1", "Acme v0");
  for (int i = 1; i <= 10; ++i) {
    company("c1", "Acme v" + std::to_string(i));
    request("company", "c1", "upsert", "2026-03-01T09:00:0" + std::to_string(i % 10) + "Z");
  }
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue"), 1);
  const SyncPass p = drain();
  EXPECT_EQ(p.completed, 1);
  EXPECT_EQ(hubspot_.upserts_of("companies", "c1"), 1);
  const auto obj = hubspot_.find("companies", "c1");
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->properties.at("name"), "Acme v10");
  EXPECT_EQ(obj->properties.at("domain"), "c1.example");
  EXPECT_EQ(q("SELECT hubspot_company_id FROM companies WHERE id = 'c1'"), obj->id);
  EXPECT_EQ(q("SELECT hubspot_sync_status FROM companies WHERE id = 'c1'"), "synced");
  EXPECT_EQ(q("SELECT last_hubspot_sync IS NOT NULL FROM companies WHERE id = 'c1'"), "t");
  EXPECT_EQ(q("SELECT status || ' ' || attempts FROM sync_queue"), "completed 1");
  // The token went out as a bearer token, and nowhere else.
  const auto reqs = hubspot_.http().requests();
  ASSERT_FALSE(reqs.empty());
  EXPECT_EQ(reqs.front().headers.at("authorization"), std::string("Bearer ") + kToken);

  // A request after the sync pushes again (the row may have changed).
  company("c1", "Acme v11");
  request("company", "c1", "upsert", "2026-03-02T09:00:00Z");
  drain();
  EXPECT_EQ(hubspot_.upserts_of("companies", "c1"), 2);
  EXPECT_EQ(hubspot_.find("companies", "c1")->properties.at("name"), "Acme v11");
}

TEST_F(SyncTest, ACompanyGoesFirstAndItsDealsAndContactsAreAssociatedOnce) {
  company("c1", "Acme");
  company("c2", "Globex");
  deal("d1", "c1", "closed_won");
  contact("k1", "c1");
  contact("k2", "c2");
  // The deal and contacts are requested first; c1 is requested after them,
  // c2 never (it is brought along as a dependency).
  request("deal", "d1");
  request("contact", "k1");
  request("contact", "k2");
  request("company", "c1");
  const SyncPass p = drain();
  EXPECT_EQ(p.failed, 0);
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue WHERE status = 'completed'"), 5);

  // Each company's upsert came before the upserts of its deals and contacts.
  const auto reqs = hubspot_.http().requests();
  auto first_push = [&](const std::string& type, const std::string& id) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].path == FakeHubspot::upsert_path(type) &&
          reqs[i].body.find("\"id\":\"" + id + "\"") != std::string::npos) {
        return i;
      }
    }
    return reqs.size();
  };
  EXPECT_LT(first_push("companies", "c1"), first_push("deals", "d1"));
  EXPECT_LT(first_push("companies", "c1"), first_push("contacts", "k1"));
  EXPECT_LT(first_push("companies", "c2"), first_push("contacts", "k2"));
  EXPECT_LT(first_push("contacts", "k2"), reqs.size());

  const std::string c1 = hubspot_.find("companies", "c1")->id;
  const std::string c2 = hubspot_.find("companies", "c2")->id;
  const auto d1 = hubspot_.find("deals", "d1");
  ASSERT_TRUE(d1);
  // Stage mapped to HubSpot's id, the pipeline, the date as epoch ms.
  EXPECT_EQ(d1->properties.at("dealstage"), "closedwon");
  EXPECT_EQ(d1->properties.at("pipeline"), "default");
  EXPECT_EQ(d1->properties.at("amount"), "1500.50");
  EXPECT_EQ(d1->properties.at("closedate"), "1796083200000");  // 2026-12-01T00:00:00Z
  EXPECT_TRUE(hubspot_.associations("deals", "companies").count({d1->id, c1}));
  EXPECT_TRUE(hubspot_.associations("contacts", "companies").count({hubspot_.find("contacts", "k1")->id, c1}));
  EXPECT_TRUE(hubspot_.associations("contacts", "companies").count({hubspot_.find("contacts", "k2")->id, c2}));
  EXPECT_EQ(q("SELECT hubspot_company_link FROM deals WHERE id = 'd1'"), c1);

  // Pushed again: the association is not made again.
  const int links = hubspot_.requests_of("associate");
  request("deal", "d1", "upsert", "2026-03-02T09:00:00Z");
  drain();
  EXPECT_EQ(hubspot_.upserts_of("deals", "d1"), 2);
  EXPECT_EQ(hubspot_.requests_of("associate"), links);
}

TEST_F(SyncTest, ARefusedBatchIsSplitUntilTheBadRowsAreAlone) {
  for (int i = 0; i < 10; ++i) {
    const std::string id = "c" + std::to_string(i);
    company(id, i == 3 || i == 7 ? "BAD" : "Good " + id);
    request("company", id);
  }
  hubspot_.reject_value("name", "BAD");
  const SyncPass p = drain();
  EXPECT_EQ(p.completed, 8);
  EXPECT_EQ(p.failed, 2);
  for (int i = 0; i < 10; ++i) {
    const std::string id = "c" + std::to_string(i);
    const bool bad = i == 3 || i == 7;
    EXPECT_EQ(hubspot_.find("companies", id).has_value(), !bad) << id;
    EXPECT_EQ(q("SELECT hubspot_sync_status FROM companies WHERE id = '" + id + "'"), bad ? "failed" : "synced");
  }
  const std::string error = q("SELECT last_error FROM sync_queue j WHERE entity_id = 'c3'");
  EXPECT_NE(error.find("400 VALIDATION_ERROR"), std::string::npos) << error;
  EXPECT_NE(error.find("correlationId"), std::string::npos) << error;
  EXPECT_EQ(q("SELECT status || ' ' || attempts FROM sync_queue WHERE entity_id = 'c3'"), "failed 1");
  // 10 -> 5+5 -> each bad half down to one row: far fewer than one request per row twice.
  EXPECT_LE(hubspot_.requests_of("upsert"), 13);
}

TEST_F(SyncTest, RetriesHonourRetryAfterAndA429HoldsEveryInstance) {
  company("c1", "Acme");
  request("company", "c1");
  hubspot_.http().script(FakeHubspot::upsert_path("companies"),
                         {status(503), status(429, {{"Retry-After", "1"}},
                                             R"({"status":"error","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"})")});
  SyncPass p = once();  // 503
  EXPECT_EQ(p.retried, 1);
  EXPECT_EQ(q("SELECT status || ' ' || in_doubt FROM sync_queue"), "pending true");  // a 5xx may have acted
  std::this_thread::sleep_for(100ms);
  // The 5xx left the job in doubt: it is read back first (not there), then pushed.
  p = once();  // 429
  EXPECT_EQ(p.retried, 1);
  EXPECT_EQ(hubspot_.requests_of("read", "companies"), 1);
  EXPECT_EQ(q("SELECT in_doubt FROM sync_queue"), "f");  // a 429 did nothing
  // Held for everyone for the Retry-After second: nothing is claimed.
  EXPECT_EQ(q("SELECT next_at > clock_timestamp() + interval '500 ms' FROM api_slots WHERE api = 'hubspot'"), "t");
  EXPECT_EQ(once().claimed, 0);
  drain(5s);
  // The 503 and the success count; the 429 does not (HubSpot would not look).
  EXPECT_EQ(q("SELECT status || ' ' || attempts FROM sync_queue"), "completed 2");
  EXPECT_EQ(hubspot_.upserts_of("companies", "c1"), 1);
  EXPECT_NE(metrics_text(metrics_).find("crm_worker_retries_total{api=\"hubspot\"} 2"), std::string::npos);
}

// No answer (a hang past hubspot.timeout), or a 200 that cannot be read:
// HubSpot may have applied the batch. The job is in doubt; its next attempt
// reads back, finds the object as it would push it, and does not push.
TEST_F(SyncTest, NoUsableAnswerPutsTheJobInDoubtAndItIsReadBackNotPushedAgain) {
  for (const bool hang : {true, false}) {
    SCOPED_TRACE(hang ? "hang" : "unreadable 200");
    const std::string id = hang ? "c1" : "c2";
    company(id, "Acme");
    request("company", id);
    Answer lost;
    if (hang) {
      lost.kind = Answer::Kind::kHang;
    } else {
      lost.status = 200;
      lost.body = "<html>upstream said yes</html>";
    }
    hubspot_.http().script(FakeHubspot::upsert_path("companies"), {lost});
    EXPECT_EQ(once().retried, 1);
    EXPECT_EQ(q("SELECT in_doubt FROM sync_queue WHERE entity_id = '" + id + "'"), "t");
    // HubSpot did apply it.
    const std::string hubspot_id = hubspot_.seed(
        "companies", {{"crm_id", id}, {"name", "Acme"}, {"domain", id + ".example"}, {"phone", ""},
                      {"city", ""}, {"state", ""}});
    std::this_thread::sleep_for(100ms);
    drain();
    EXPECT_EQ(q("SELECT status || ' ' || hubspot_company_id FROM sync_queue j JOIN companies c ON c.id = j.entity_id WHERE c.id = '" + id + "'"),
              "completed " + hubspot_id);
    EXPECT_EQ(hubspot_.upserts_of("companies", id), 0);  // only the lost one, which changed nothing here
  }
}

TEST_F(SyncTest, OutOfAttemptsIsDeadVisibleAndRedrivable) {
  company("c1", "Acme");
  company("c2", "Globex");
  request("company", "c1");
  request("company", "c2");
  // The first attempt's 500 leaves the outcome unknown, so later attempts
  // read back first; every read fails. (A handler, not a counted script: the
  // retries' jitter decides whether the two jobs read back together or apart.)
  hubspot_.http().script(FakeHubspot::upsert_path("companies"), {status(500)});
  hubspot_.http().set_handler(FakeHubspot::read_path("companies"), [](const Received&) { return status(502); });
  drain(10s);
  hubspot_.http().set_handler(FakeHubspot::read_path("companies"), {});
  EXPECT_EQ(q("SELECT string_agg(status || ' ' || attempts, ',') FROM sync_queue"), "dead 3,dead 3");
  EXPECT_EQ(q("SELECT hubspot_sync_status FROM companies WHERE id = 'c1'"), "failed");
  ASSERT_TRUE(executor().report().is_ok());
  const std::string text = metrics_text(metrics_);
  EXPECT_NE(text.find("crm_worker_sync_queue_jobs{status=\"dead\"} 2"), std::string::npos) << text;

  const std::map<std::string, std::string> env = {{"CRM_WORKER_DATABASE_URL", db_.url()}};
  auto [code, listing] = run_cli({"sync", "list"}, env);
  EXPECT_EQ(code, 0);
  EXPECT_NE(listing.find("c1"), std::string::npos) << listing;
  EXPECT_NE(listing.find("HubSpot answered"), std::string::npos) << listing;
  EXPECT_EQ(run_cli({"sync", "redrive"}, env).first, 2);  // --id or --all
  auto [redrive_code, redriven] = run_cli({"sync", "redrive", "--all"}, env);
  EXPECT_EQ(redrive_code, 0);
  EXPECT_NE(redriven.find("2 job(s) pending again"), std::string::npos) << redriven;
  drain();
  EXPECT_EQ(q("SELECT string_agg(status, ',') FROM sync_queue"), "completed,completed");
  EXPECT_EQ(run_cli({"sync", "redrive", "--id", "1"}, env).first, 1);  // not failed now
}

TEST_F(SyncTest, OtherClientErrorsFailAtOnceWithTheErrorKept) {
  company("c1", "Acme");
  request("company", "c1");
  hubspot_.http().script(FakeHubspot::upsert_path("companies"),
                         {status(403, {}, R"({"status":"error","message":"This app hasn't been granted all required scopes","correlationId":"k-1","category":"MISSING_SCOPES"})")});
  const SyncPass p = drain();
  EXPECT_EQ(p.failed, 1);
  EXPECT_EQ(q("SELECT status || ' ' || attempts FROM sync_queue"), "failed 1");
  EXPECT_NE(q("SELECT last_error FROM sync_queue").find("MISSING_SCOPES"), std::string::npos);
}

TEST_F(SyncTest, DeletesArchiveTheObjectWhetherOrNotTheRowIsStillThere) {
  company("c1", "Acme");
  company("c2", "Globex");
  request("company", "c1");
  request("company", "c2");
  drain();
  const std::string c1 = hubspot_.find("companies", "c1")->id;
  const std::string c2 = hubspot_.find("companies", "c2")->id;
  // c1 still has its row (and its id); c2's row is gone; c3 was never synced.
  sql("DELETE FROM companies WHERE id = 'c2'");
  request("company", "c1", "delete", "2026-03-02T09:00:00Z");
  request("company", "c2", "delete", "2026-03-02T09:00:00Z");
  request("company", "c3", "delete", "2026-03-02T09:00:00Z");
  const SyncPass p = drain();
  EXPECT_EQ(p.completed, 3);
  EXPECT_TRUE(hubspot_.find_by_id("companies", c1)->archived);
  EXPECT_TRUE(hubspot_.find_by_id("companies", c2)->archived);
  EXPECT_EQ(q("SELECT hubspot_sync_status FROM companies WHERE id = 'c1'"), "archived");
  EXPECT_EQ(hubspot_.requests_of("archive"), 1);
  // An upsert request older than the delete does not bring c1 back.
  request("company", "c1", "upsert", "2026-03-01T10:00:00Z");
  drain();
  EXPECT_FALSE(hubspot_.find("companies", "c1"));
}

TEST_F(SyncTest, AnUpsertOfARowThatDoesNotExistFailsWithAReason) {
  request("company", "ghost");
  drain();
  EXPECT_EQ(q("SELECT status FROM sync_queue"), "failed");
  EXPECT_NE(q("SELECT last_error FROM sync_queue").find("no company row 'ghost'"), std::string::npos);
  EXPECT_EQ(hubspot_.requests_of("upsert"), 0);
}

TEST_F(SyncTest, ATakenOverLeaseCannotOverwriteAndTheNewOwnerDoesNotPushTwice) {
  company("c1", "Acme");
  request("company", "c1");
  // Worker "dead" claims with a short lease, pushes, and dies before recording.
  const std::vector<db::SyncJob> claimed = claim_as("dead", Millis{300});
  ASSERT_EQ(claimed.size(), 1u);
  hubspot_.seed("companies", {{"crm_id", "c1"}, {"name", "Acme"}, {"domain", "c1.example"},
                              {"phone", ""}, {"city", ""}, {"state", ""}});
  // Not before the lease ends.
  EXPECT_EQ(once().claimed, 0);
  std::this_thread::sleep_for(400ms);
  const SyncPass p = once();
  EXPECT_EQ(p.claimed, 1);
  EXPECT_EQ(p.completed, 1);
  // Read back, found as it would be pushed: not pushed again.
  EXPECT_EQ(hubspot_.requests_of("read", "companies"), 1);
  EXPECT_EQ(hubspot_.requests_of("upsert"), 0);
  EXPECT_EQ(q("SELECT hubspot_company_id FROM companies"), hubspot_.find("companies", "c1")->id);

  // The dead worker's late outcome changes nothing.
  EXPECT_TRUE(record_as("dead", claimed.front(), db::SyncOutcome::Kind::kFailed).empty());
  EXPECT_EQ(q("SELECT status FROM sync_queue"), "completed");
  EXPECT_EQ(q("SELECT hubspot_sync_status FROM companies"), "synced");
}

TEST_F(SyncTest, OneJobPerEntityInFlightAndARetryAbsorbsTheNewerRequest) {
  company("c1", "Acme");
  request("company", "c1");
  const std::vector<db::SyncJob> first = claim_as("w1", Millis{60000});
  ASSERT_EQ(first.size(), 1u);
  // A newer request while the first is in flight: a new pending job that
  // waits for it.
  request("company", "c1", "delete", "2026-03-02T09:00:00Z");
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue"), 2);
  EXPECT_EQ(once().claimed, 0);
  // The first job is refused for now: it takes the newer request over.
  EXPECT_EQ(record_as("w1", first.front(), db::SyncOutcome::Kind::kRetry).size(), 1u);
  EXPECT_EQ(q("SELECT count(*) || ' ' || min(operation) || ' ' || min(status) FROM sync_queue"), "1 delete pending");
}

TEST_F(SyncTest, TheSharedBudgetIsCountedInTheDatabase) {
  auto c = db_.connect();
  const std::vector<db::RateWindow> windows{{3, Millis{10000}}};
  for (int i = 0; i < 3; ++i) {
    pqxx::work tx(*c);
    const db::ApiTake take = db::take_api_request(tx, "hubspot", windows, Millis{0});
    EXPECT_FALSE(take.wait) << i;
    EXPECT_GT(take.request, 0);
    tx.commit();
  }
  {
    pqxx::work tx(*c);
    const db::ApiTake take = db::take_api_request(tx, "hubspot", windows, Millis{0});
    ASSERT_TRUE(take.wait);
    EXPECT_GT(*take.wait, Millis{9000});
    EXPECT_LE(*take.wait, Millis{10000});
    EXPECT_EQ(db::api_requests_in(tx, "hubspot", Millis{10000}), 3);
  }
  // A window the API announced binds every instance, whatever their own.
  {
    sql("DELETE FROM api_requests");
    pqxx::work tx(*c);
    db::set_api_window(tx, "hubspot", {1, Millis{5000}});
    tx.commit();
  }
  pqxx::work tx(*c);
  EXPECT_FALSE(db::take_api_request(tx, "hubspot", windows, Millis{0}).wait);
  const auto second = db::take_api_request(tx, "hubspot", windows, Millis{0});
  ASSERT_TRUE(second.wait);
  EXPECT_GT(*second.wait, Millis{4000});
}

// The enqueue of a newer request and a job going back to pending both want
// to be the entity's one pending job: they take turns on the entity's lock,
// so recording the retry never fails on the unique index (which would drop
// the whole batch's outcomes).
TEST_F(SyncTest, ARetryAndANewerRequestCommittingMeanwhileDoNotCollide) {
  company("c1", "Acme");
  request("company", "c1");
  const std::vector<db::SyncJob> first = claim_as("w1", Millis{60000});
  ASSERT_EQ(first.size(), 1u);
  // The enqueue's transaction: the entity's lock, then a new pending job,
  // not committed yet.
  auto enqueue = db_.connect();
  pqxx::work etx(*enqueue);
  db::lock_sync_entities(etx, {{"company", "c1"}});
  etx.exec("INSERT INTO sync_queue (entity_type, entity_id, operation, requested_at) "
           "VALUES ('company', 'c1', 'delete', '2026-03-02T09:00:00Z')");
  std::atomic<bool> recorded{false};
  std::string error;
  std::thread retry([&] {
    try {
      record_as("w1", first.front(), db::SyncOutcome::Kind::kRetry);
    } catch (const std::exception& e) {
      error = e.what();
    }
    recorded = true;
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(recorded.load());  // waiting for the entity's lock
  etx.commit();
  retry.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(q("SELECT count(*) || ' ' || min(operation) || ' ' || min(status) FROM sync_queue"), "1 delete pending");
}

// The same for a redrive: a request committed while the operator redrives
// supersedes the failed job instead of colliding with it.
TEST_F(SyncTest, ARedriveAndANewerRequestCommittingMeanwhileDoNotCollide) {
  request("company", "ghost");
  drain();
  ASSERT_EQ(q("SELECT status FROM sync_queue"), "failed");
  auto enqueue = db_.connect();
  pqxx::work etx(*enqueue);
  db::lock_sync_entities(etx, {{"company", "ghost"}});
  etx.exec("INSERT INTO sync_queue (entity_type, entity_id, operation, requested_at) "
           "VALUES ('company', 'ghost', 'delete', '2026-03-02T09:00:00Z')");
  db::RedriveResult result;
  std::string error;
  std::thread redrive([&] {
    try {
      auto c = db_.connect();
      pqxx::work tx(*c);
      result = db::redrive_sync_jobs(tx, std::nullopt);
      tx.commit();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(300ms);
  etx.commit();
  redrive.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(result.redriven, 0);
  EXPECT_EQ(result.superseded, 1);
  EXPECT_EQ(q("SELECT string_agg(status, ',' ORDER BY id) FROM sync_queue"), "failed,pending");
}

TEST_F(SyncTest, AJobThatDiesDoesNotTakeANewerRequestWithIt) {
  config_.retry.max_attempts = 1;
  company("c1", "Acme");
  request("company", "c1");
  const std::vector<db::SyncJob> first = claim_as("w1", Millis{60000}, 1);
  ASSERT_EQ(first.size(), 1u);
  request("company", "c1", "upsert", "2026-03-02T09:00:00Z");
  record_as("w1", first.front(), db::SyncOutcome::Kind::kRetry, 1);
  EXPECT_EQ(q("SELECT string_agg(status, ',' ORDER BY id) FROM sync_queue"), "dead,pending");
}

TEST_F(SyncTest, AJobWhoseWorkerDiesOnEveryAttemptEndsDead) {
  company("c1", "Acme");
  request("company", "c1");
  for (int attempt = 1; attempt <= 3; ++attempt) {
    EXPECT_EQ(claim_as("doomed", Millis{1}).size(), 1u) << attempt;
    std::this_thread::sleep_for(20ms);  // the lease runs out: the worker "died"
  }
  EXPECT_TRUE(claim_as("next", Millis{60000}).empty());
  EXPECT_EQ(q("SELECT status FROM sync_queue"), "dead");
  EXPECT_NE(q("SELECT last_error FROM sync_queue").find("stopped during each of its 3 attempts"), std::string::npos);
}

TEST_F(SyncTest, ARevokedTokenFailsTheBatchWithoutSplittingAndPausesHubspot) {
  for (int i = 0; i < 10; ++i) {
    company("c" + std::to_string(i), "Company");
    request("company", "c" + std::to_string(i));
  }
  hubspot_.http().script(FakeHubspot::upsert_path("companies"),
                         {status(401, {}, R"({"status":"error","message":"Authentication credentials not found.","correlationId":"a-1","category":"INVALID_AUTHENTICATION"})")});
  const SyncPass p = once();
  EXPECT_EQ(p.failed, 10);
  EXPECT_EQ(hubspot_.http().requests(FakeHubspot::upsert_path("companies")).size(), 1u);
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue WHERE status = 'failed' AND last_error LIKE '%INVALID_AUTHENTICATION%'"), 10);
  EXPECT_EQ(q("SELECT next_at > clock_timestamp() + interval '30 seconds' FROM api_slots WHERE api = 'hubspot'"), "t");
}

TEST_F(SyncTest, ADeleteWhoseLookupIsRefusedIsNotCalledArchived) {
  request("company", "gone", "delete");
  hubspot_.http().script(FakeHubspot::read_path("companies"),
                         {status(400, {}, R"({"status":"error","message":"Unable to find property crm_id","correlationId":"r-1","category":"VALIDATION_ERROR"})")});
  drain();
  EXPECT_EQ(q("SELECT status FROM sync_queue"), "failed");
  EXPECT_NE(q("SELECT last_error FROM sync_queue").find("could not look the object up"), std::string::npos);
  EXPECT_EQ(hubspot_.requests_of("archive"), 0);
}

TEST_F(SyncTest, TwoExecutorsShareTheQueueAndNeverExceedTheLimit) {
  // HubSpot's headers say 4 requests per 500 ms: both executors learn it
  // from their first answer and count every request in the database.
  hubspot_.set_rate_limit(4, 500ms);
  config_.hubspot.batch_size = 1;
  constexpr int kCompanies = 16;
  for (int i = 0; i < kCompanies; ++i) {
    company("c" + std::to_string(i), "Company " + std::to_string(i));
    request("company", "c" + std::to_string(i));
  }
  SyncExecutor a(config_, db_.conninfo(), metrics_, "a");
  SyncExecutor b(config_, db_.conninfo(), metrics_, "b");
  std::atomic<bool> stop{false};
  std::thread ta([&] { a.run(stop); });
  std::thread tb([&] { b.run(stop); });
  const bool done = wait_until([&] {
    return db_.count("SELECT count(*) FROM sync_queue WHERE status = 'completed'") == kCompanies;
  }, 30s);
  stop = true;
  ta.join();
  tb.join();
  ASSERT_TRUE(done) << q("SELECT string_agg(status, ',') FROM sync_queue");
  EXPECT_EQ(hubspot_.rate_limit_violations(), 0);
  EXPECT_LE(hubspot_.max_requests_in_any_interval(), 4);
  for (int i = 0; i < kCompanies; ++i) EXPECT_EQ(hubspot_.upserts_of("companies", "c" + std::to_string(i)), 1);
  std::printf("two executors: %d requests, at most %d in any 500 ms\n", hubspot_.requests_of("upsert"),
              hubspot_.max_requests_in_any_interval());
}

TEST_F(SyncTest, ItSlowsDownWhenHubspotSaysOthersSpentTheBudget) {
  hubspot_.set_rate_limit(10, 1000ms);
  config_.hubspot.batch_size = 1;
  for (int i = 0; i < 6; ++i) {
    company("c" + std::to_string(i), "Company " + std::to_string(i));
    request("company", "c" + std::to_string(i));
  }
  // Another client of the app spends 8 of the 10.
  http::Client other;
  for (int i = 0; i < 8; ++i) {
    http::Request r;
    r.url = hubspot_.base_url() + FakeHubspot::read_path("companies");
    r.headers = {{"Authorization", "Bearer other"}, {"Content-Type", "application/json"}};
    r.body = R"({"inputs":[{"id":"x"}],"idProperty":"crm_id"})";
    ASSERT_EQ(other.post(r).status / 100, 2);
  }
  drain(10s);
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue WHERE status = 'completed'"), 6);
  EXPECT_EQ(hubspot_.rate_limit_violations(), 0);
}

// A change made in HubSpot before we knew the object's id waits on the
// timeline; when the sync writes the id back it applies, and applying it
// queues no sync of its own (no ping-pong).
TEST_F(SyncTest, AHubspotChangeWaitingForItsIdAppliesWhenTheIdIsWrittenBack) {
  sql("INSERT INTO deals (id, name, stage, updated_at) VALUES ('d1', 'Big', 'proposal', '2026-03-01T08:00:00Z')");
  const std::string hubspot_id = hubspot_.seed("deals", {{"crm_id", "d1"}, {"dealname", "Big"}});
  const HistoryEvent change = cloud_event(
      "hs1", "hubspot.object.changed", "2026-03-01T10:00:00Z",
      R"({"object_type":"deal","object_id":")" + hubspot_id +
          R"(","property":"dealstage","value":"closedlost","occurred_at":"2026-03-01T10:00:00Z"})");
  ASSERT_TRUE(apply_events(conn_, {change}, 1, db::projection_options(config_)).is_ok());
  EXPECT_EQ(q("SELECT stage FROM deals WHERE id = 'd1'"), "proposal");  // no row has that id yet
  request("deal", "d1");
  drain();
  EXPECT_EQ(q("SELECT hubspot_deal_id FROM deals WHERE id = 'd1'"), hubspot_id);
  EXPECT_EQ(q("SELECT stage FROM deals WHERE id = 'd1'"), "closed_lost");
  EXPECT_EQ(q("SELECT updated_at = '2026-03-01T08:00:00Z' FROM deals WHERE id = 'd1'"), "t");
  EXPECT_EQ(db_.count("SELECT count(*) FROM sync_queue"), 1);
}

TEST_F(SyncTest, MetricsCountJobsAndTheOldestPendingAge) {
  company("c1", "Acme");
  request("company", "c1");
  sql("UPDATE sync_queue SET created_at = now() - interval '90 seconds'");
  ASSERT_TRUE(executor().report().is_ok());
  std::string text = metrics_text(metrics_);
  EXPECT_NE(text.find("crm_worker_sync_queue_jobs{status=\"pending\"} 1"), std::string::npos) << text;
  EXPECT_GE(metric_sum(text, "crm_worker_sync_queue_oldest_pending_seconds"), 90);
  drain();
  ASSERT_TRUE(executor().report().is_ok());
  text = metrics_text(metrics_);
  EXPECT_NE(text.find("crm_worker_sync_queue_jobs{status=\"completed\"} 1"), std::string::npos);
  EXPECT_EQ(metric_sum(text, "crm_worker_sync_queue_oldest_pending_seconds"), 0);
  EXPECT_GE(metric_sum(text, "crm_worker_external_requests_total{api=\"hubspot\",code=\"200\"}"), 1);
  EXPECT_EQ(text.find(kToken), std::string::npos);
}

// Two crm-worker processes, as two instances would run: they share the
// queue (every company pushed once) and HubSpot's limit (never more than it
// allows in any window, never a 429).
TEST(SyncInstances, TwoWorkerProcessesShareTheQueueAndTheLimit) {
  DevBrokerProcess broker(1, 2);
  TestDatabase db;
  FakeHubspot hubspot;
  hubspot.set_rate_limit(4, 500ms);
  constexpr int kCompanies = 12;
  const std::string config = "[hubspot]\nbase_url = \"" + hubspot.base_url() +
                             "\"\ntimeout = \"2s\"\nbatch_size = 1\n";
  const std::map<std::string, std::string> env = {{"CRM_WORKER_HUBSPOT_TOKEN", kToken}};
  WorkerProcess a(db, broker.bootstrap(), env, config);
  WorkerProcess b(db, broker.bootstrap(), env, config);
  // Both are running when the jobs arrive (the NOTIFY wakes both).
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec_params("INSERT INTO companies (id, name) SELECT 'c' || g, 'Company ' || g FROM generate_series(1, $1) g",
                   kCompanies);
    tx.exec_params("INSERT INTO sync_queue (entity_type, entity_id, operation) "
                   "SELECT 'company', 'c' || g, 'upsert' FROM generate_series(1, $1) g",
                   kCompanies);
    tx.commit();
  }
  ASSERT_TRUE(wait_until([&] {
    return db.count("SELECT count(*) FROM sync_queue WHERE status = 'completed'") == kCompanies;
  }, 60s)) << a.process().log() << b.process().log();
  EXPECT_EQ(hubspot.rate_limit_violations(), 0);
  EXPECT_LE(hubspot.max_requests_in_any_interval(), 4);
  for (int i = 1; i <= kCompanies; ++i) EXPECT_EQ(hubspot.upserts_of("companies", "c" + std::to_string(i)), 1);
  // Both took part.
  EXPECT_NE(a.process().log().find("HubSpot sync batch"), std::string::npos);
  EXPECT_NE(b.process().log().find("HubSpot sync batch"), std::string::npos);
}

// kill -9 in a window of the sync executor (after_sync_claim: the jobs
// are claimed and nothing was sent; after_hubspot_upsert: HubSpot accepted
// the batch and its outcome was not recorded): after the lease the jobs
// come back in doubt, are read back, and each company is pushed exactly
// once.
class SyncCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(SyncCrash, KillNineInTheWindowNeverPushesTwice) {
  const std::string point = GetParam();
  DevBrokerProcess broker(1, 1);
  TestDatabase db;
  FakeHubspot hubspot;
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec("INSERT INTO companies (id, name) VALUES ('c1', 'Acme'), ('c2', 'Globex')");
    tx.commit();
    db::Database conn(db.conninfo());
    ASSERT_TRUE(apply_events(conn,
                             {cloud_event("r1", "crm.sync.requested", "2026-03-01T09:00:00Z",
                                          R"({"entity_type":"company","entity_id":"c1","operation":"upsert"})"),
                              cloud_event("r2", "crm.sync.requested", "2026-03-01T09:00:00Z",
                                          R"({"entity_type":"company","entity_id":"c2","operation":"upsert"})")},
                             1, db::ProjectionOptions{})
                    .is_ok());
  }
  const std::string config = "[hubspot]\nbase_url = \"" + hubspot.base_url() + "\"\ntimeout = \"1s\"\n";
  const std::map<std::string, std::string> env = {{"CRM_WORKER_HUBSPOT_TOKEN", kToken}};
  std::map<std::string, std::string> crash_env = env;
  crash_env["CRM_WORKER_CRASH_AT"] = point;
  WorkerProcess crashing(db, broker.bootstrap(), crash_env, config);
  auto code = crashing.process().wait(30s);
  ASSERT_TRUE(code.has_value()) << crashing.process().log();
  EXPECT_EQ(*code, 128 + SIGKILL);
  EXPECT_EQ(hubspot.upserts_of("companies", "c1"), point == "after_hubspot_upsert" ? 1 : 0);
  EXPECT_EQ(db.scalar("SELECT string_agg(status, ',') FROM sync_queue"), "in_progress,in_progress");

  WorkerProcess worker(db, broker.bootstrap(), env, config);
  ASSERT_TRUE(wait_until([&] {
    return db.count("SELECT count(*) FROM sync_queue WHERE status = 'completed'") == 2;
  }, 30s)) << worker.process().log();
  EXPECT_EQ(hubspot.upserts_of("companies", "c1"), 1);
  EXPECT_EQ(hubspot.upserts_of("companies", "c2"), 1);
  EXPECT_EQ(hubspot.requests_of("read", "companies"), 1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM companies WHERE hubspot_sync_status = 'synced' AND hubspot_company_id IS NOT NULL"), "2");
  EXPECT_EQ(worker.process().log().find("canary"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Windows, SyncCrash, ::testing::Values("after_sync_claim", "after_hubspot_upsert"));

}  // namespace
}  // namespace crm::test
