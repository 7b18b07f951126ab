// The external-API and timer rows of TESTPLAN's fault matrix that need the
// whole worker: every API down while Kafka consumption goes on, a HubSpot
// change echoing our own push, and a worker whose wall clock is hours off.
// (The other API and timer rows are followup_test.cc, sync_test.cc and
// notifier_test.cc.) Each test states its guarantee and prints its figures.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/time.h"
#include "tests/harness/fake_http.h"
#include "tests/harness/fake_hubspot.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"
#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr const char* kSendgridKey = "SG.scenario-key";
constexpr const char* kHubspotToken = "pat-scenario-token";
constexpr const char* kSlackPath = "/services/T0/B0/scenario";
constexpr const char* kMailPath = "/v3/mail/send";

Answer answer(int status, std::string body, std::vector<std::pair<std::string, std::string>> headers = {}) {
  Answer a;
  a.status = status;
  a.body = std::move(body);
  a.headers = std::move(headers);
  return a;
}

// A structured-mode CloudEvent; `data` is raw JSON text.
std::string cloud(const std::string& id, const std::string& type, const std::string& time,
                  const std::string& data) {
  return R"({"specversion":"1.0","id":")" + id + R"(","source":"scenario","type":")" + type +
         R"(","time":")" + time + R"(","data":)" + data + "}";
}

// SendGrid, HubSpot and Slack as the worker sees them, up or down together.
// Down, every request to any of them is answered 503; up, SendGrid accepts
// every email (202 with a message id), HubSpot is FakeHubspot with the
// given rate limit, and Slack answers "ok". The requests each fake accepted
// are kept apart from its ledger (which has every request), so the checks
// can tell an email sent from an email refused.
class FakeApis {
 public:
  explicit FakeApis(int hubspot_limit) {
    hubspot_.set_rate_limit(hubspot_limit, 10s);
    sendgrid_.set_handler("/", [this](const Received& r) {
      if (down_.load()) return answer(503, R"({"errors":[{"message":"service unavailable"}]})");
      std::lock_guard lock(mutex_);
      accepted_emails_.push_back(r);
      return answer(202, "", {{"X-Message-Id", "sg-" + std::to_string(accepted_emails_.size())}});
    });
    slack_.set_handler("/", [this](const Received& r) {
      if (down_.load()) return answer(503, "service_unavailable", {{"Content-Type", "text/plain"}});
      std::lock_guard lock(mutex_);
      accepted_slack_.push_back(r);
      return answer(200, "ok", {{"Content-Type", "text/plain"}});
    });
  }

  void set_down(bool down) {
    down_.store(down);
    // A longer prefix than FakeHubspot's own "/": it answers every HubSpot
    // endpoint while it is there, and HubSpot's state stays untouched.
    if (down) {
      hubspot_.http().set_handler("/crm", [](const Received&) {
        return answer(503, R"({"status":"error","message":"Service Unavailable","category":"SERVICE_UNAVAILABLE"})",
                      {{"Content-Type", "application/json"}});
      });
    } else {
      hubspot_.http().set_handler("/crm", {});
    }
  }

  // The worker's configuration for them (TOML tables) and its secrets.
  std::string config(int hubspot_limit) const {
    return "[sendgrid]\nbase_url = \"" + sendgrid_.base_url() +
           "\"\nfrom_email = \"sales@example.com\"\nfollowup_template = \"d-scenario\"\ntimeout = \"2s\"\n"
           "[hubspot]\nbase_url = \"" + hubspot_.base_url() + "\"\nrequests_per_10s = " +
           std::to_string(hubspot_limit) + "\nbatch_size = 10\ntimeout = \"2s\"\n"
           "[slack]\ntimeout = \"2s\"\n"
           "[followups]\nsend_window = \"00:00-24:00\"\nsend_on_weekends = true\n";
  }
  std::map<std::string, std::string> env() const {
    return {{"CRM_WORKER_SENDGRID_API_KEY", kSendgridKey},
            {"CRM_WORKER_HUBSPOT_TOKEN", kHubspotToken},
            {"CRM_WORKER_SLACK_WEBHOOK_URL", slack_.base_url() + kSlackPath}};
  }

  FakeHubspot& hubspot() { return hubspot_; }
  std::vector<Received> emails() const { return sendgrid_.requests(kMailPath); }
  std::vector<Received> slack() const { return slack_.requests(kSlackPath); }
  std::vector<Received> accepted_emails() const {
    std::lock_guard lock(mutex_);
    return accepted_emails_;
  }
  std::vector<Received> accepted_slack() const {
    std::lock_guard lock(mutex_);
    return accepted_slack_;
  }

 private:
  std::atomic<bool> down_{false};
  mutable std::mutex mutex_;
  std::vector<Received> accepted_emails_;
  std::vector<Received> accepted_slack_;
  // Last: destroyed first, so no handler runs on the members above once
  // they are gone.
  FakeHttpServer sendgrid_;
  FakeHttpServer slack_;
  FakeHubspot hubspot_;
};

// Every API down for a while (20 s; 5 minutes at full size) while the whole
// stream is published and consumed, then back.
//
// Guarantee: a failing API never holds up Kafka consumption: the stream is
// applied in full, exactly once, with its offsets committed, while every
// API is refusing. And when the APIs return, the work that waited for them
// is done, once: every follow-up email that came due is sent at most once
// (exactly once if it had an address), HubSpot holds what our ids say,
// HubSpot's rate limit and Slack's one message per second held throughout
// (the retries of the outage included), no job made more than its attempts,
// and nothing is left stuck.
TEST(ExternalScenario, EveryApiDownWhileKafkaConsumptionGoesOn) {
  const seconds outage(Scenario::scaled(20, 300));
  constexpr int kHubspotLimit = 20;  // requests per 10 s
  // Backoff capped at a few seconds, and enough attempts to outlast the
  // outage, as production's defaults (10 attempts, up to 10 minutes apart)
  // outlast a 5-minute one: the scenario is about coming back, not giving
  // up (that row is sync_test's and followup_test's).
  constexpr int kMaxAttempts = 60;
  const std::string retry = "[retry]\nmax_attempts = " + std::to_string(kMaxAttempts) +
                            "\ninitial_backoff = \"500ms\"\nmax_backoff = \"" +
                            std::to_string(Scenario::scaled(4, 20)) + "s\"\n";
  FakeApis apis(kHubspotLimit);
  apis.set_down(true);
  // 40 prospects (about 600 events and 130 Slack notifications) keep the
  // reduced size within a minute; the oracle's replay is most of it.
  Scenario s({.name = "every API down",
              .prospects = 40,
              .executors = true,
              .worker_config = apis.config(kHubspotLimit) + retry});
  auto worker = s.start_worker(apis.env());
  const auto down_since = steady_clock::now();

  s.publish();
  // Consumed in full while every API refuses: the APIs stay down until
  // then, however long it takes.
  ASSERT_TRUE(s.wait_settled(120s)) << worker->process().log();
  // The executors were at work against the dead APIs meanwhile (SendGrid's
  // turn is below: the history may leave no email to send).
  ASSERT_TRUE(wait_until([&] {
    return !apis.slack().empty() && !apis.hubspot().http().requests().empty();
  }, 30s)) << worker->process().log();
  s.note_fault("s of every API down",
               static_cast<int>(duration_cast<seconds>(steady_clock::now() - down_since).count()));
  s.check();

  // The history leaves few follow-up emails to send, often none (most are
  // cancelled by replies and suppressions, and many prospects have no
  // address): ten more prospects get one each, due now, through the same
  // events. After check(), so that the oracle need not know them. The
  // timers come first: each fires before its prospect is known and waits
  // for it; then the prospects come, and each email is refused by the dead
  // SendGrid before it comes back.
  constexpr int kLateFollowups = 10;
  {
    Producer producer(s.broker().bootstrap());
    const std::string now = format_rfc3339(now_timestamp());
    for (int k = 0; k < kLateFollowups; ++k) {
      const std::string pid = "late-p" + std::to_string(k);
      ASSERT_GE(producer.send("crm.followups", pid,
                              cloud("late-s" + std::to_string(k), "crm.followup.scheduled", now,
                                    R"({"followup_id":"late-f)" + std::to_string(k) + R"(","prospect_id":")" + pid +
                                        R"(","kind":"email","due_at":")" + now + R"("})")),
                0);
    }
    ASSERT_TRUE(wait_until([&] {
      return s.db().count("SELECT count(*) FROM followups WHERE id LIKE 'late-f%' AND status = 'scheduled'"
                          " AND last_error LIKE 'waiting for the prospect%'") == kLateFollowups;
    }, 30s)) << worker->process().log();
    for (int k = 0; k < kLateFollowups; ++k) {
      const std::string pid = "late-p" + std::to_string(k);
      ASSERT_GE(producer.send("crm.outreach.events", pid,
                              discovered_event("late-d" + std::to_string(k), pid, "Late",
                                               now, R"("email":")" + pid + R"(@example.com")")),
                0);
    }
  }
  ASSERT_TRUE(wait_until([&] {
    return s.db().count("SELECT count(*) FROM followups WHERE id LIKE 'late-f%' AND status = 'scheduled'"
                        " AND last_error LIKE 'SendGrid%'") == kLateFollowups;
  }, 30s)) << worker->process().log();

  std::this_thread::sleep_until(down_since + outage);
  const auto down_for = duration_cast<seconds>(steady_clock::now() - down_since);
  const size_t refused_emails = apis.emails().size();
  const size_t refused_slack = apis.slack().size();
  const size_t refused_hubspot = apis.hubspot().http().requests().size();
  apis.set_down(false);

  // Back: every email that came due is done with, every sync job is, and
  // Slack delivers again. (The outbox drains at one message per second;
  // all of it would take minutes.)
  const long long notifications = s.db().count("SELECT count(*) FROM notifications");
  const size_t slack_wanted = static_cast<size_t>(std::min<long long>(notifications, 5));
  ASSERT_TRUE(wait_until([&] {
    return s.db().count("SELECT count(*) FROM followups WHERE kind = 'email' AND"
                        " (status = 'sending' OR (status = 'scheduled' AND due_at <= now()))") == 0 &&
           s.db().count("SELECT count(*) FROM sync_queue WHERE status IN ('pending', 'in_progress')") == 0 &&
           apis.accepted_slack().size() >= slack_wanted;
  }, 120s)) << s.db().scalar("SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n FROM"
                             " sync_queue GROUP BY 1) x")
            << worker->process().log();
  worker->process().signal(SIGTERM);
  const std::optional<int> code = worker->process().wait(30s);
  ASSERT_TRUE(code.has_value()) << worker->process().log();
  EXPECT_EQ(*code, 0) << worker->process().log();

  const EmailFigures emails = check_emails(s.db(), apis.emails(), apis.accepted_emails());
  const HubspotFigures hubspot = check_hubspot(s.db(), apis.hubspot(), kHubspotLimit);
  const SlackFigures slack = check_slack(s.db(), apis.slack(), apis.accepted_slack());
  const int most_attempts = check_bounded_retries(s.db(), kMaxAttempts);
  check_nothing_stuck(s.db());
  // Every due email went out once it could, but those with no address to
  // send to; none ran out of attempts.
  const long long no_address = s.db().count(
      "SELECT count(*) FROM followups WHERE kind = 'email' AND status = 'dead' AND last_error LIKE '%no email address%'");
  EXPECT_EQ(emails.sent + no_address, emails.due);
  EXPECT_EQ(emails.exhausted, 0);
  EXPECT_GT(emails.sent, 0);
  EXPECT_GT(hubspot.synced, 0);
  EXPECT_GE(slack.accepted, static_cast<long long>(slack_wanted));
  EXPECT_EQ(slack.accepted, slack.sent) << "no crash here: each notification delivered once";
  std::printf(
      "scenario every API down: %lld s down, refused meanwhile: %zu emails, %zu HubSpot requests, %zu Slack "
      "messages; then emails sent %lld for %lld due (%lld without an address; %lld requests, %lld accepted); "
      "HubSpot: %lld entities synced, %lld objects live, max requests in 10 s %d of limit %d; Slack: %lld "
      "delivered of %lld, min gap %lld ms; most attempts by a job %d of %d\n",
      static_cast<long long>(down_for.count()), refused_emails, refused_hubspot, refused_slack, emails.sent,
      emails.due, no_address, emails.requests, emails.accepted, hubspot.synced, hubspot.live,
      hubspot.max_in_interval, kHubspotLimit, slack.sent, notifications, slack.min_gap_ms, most_attempts,
      kMaxAttempts);
  std::fflush(stdout);
}

// A HubSpot change that only echoes our own push: HubSpot's webhook (through
// the relay) reports each property we just wrote, with the value HubSpot
// holds, at the time of our write.
//
// Guarantee: no ping-pong. The worker applies the echo (by the rule it is a
// change newer than the web app's write, and it moves nothing) and never
// pushes because of it: HubSpot's upsert count stays where it was and no
// sync job is queued.
TEST(ExternalScenario, AHubspotChangeEchoingOurOwnPushIsNeverPushedBack) {
  DevBrokerProcess broker(1, 2);
  TestDatabase db(DatabaseOptions{.pg_dir = "", .roles = true});
  FakeHubspot hubspot;
  {
    // The web app's rows, written an hour ago.
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec0("INSERT INTO companies (id, name, domain, updated_at) VALUES"
             " ('co1', 'Acme', 'acme.example', now() - interval '1 hour')");
    tx.exec0("INSERT INTO deals (id, company_id, name, stage, amount, close_date, updated_at) VALUES"
             " ('d1', 'co1', 'Renewal', 'closed_won', 1500.50, '2026-12-01', now() - interval '1 hour')");
    tx.commit();
  }
  const std::string config = "[hubspot]\nbase_url = \"" + hubspot.base_url() + "\"\ntimeout = \"2s\"\n";
  WorkerProcess worker(db, broker.bootstrap(), {{"CRM_WORKER_HUBSPOT_TOKEN", kHubspotToken}}, config);
  Producer producer(broker.bootstrap());

  // The web app asks for the deal's sync; its company goes first.
  const std::string now = format_rfc3339(now_timestamp());
  ASSERT_GE(producer.send("crm.sync.jobs", "d1",
                          cloud("sync-d1", "crm.sync.requested", now,
                                R"({"entity_type":"deal","entity_id":"d1","operation":"upsert"})")),
            0);
  ASSERT_TRUE(wait_until([&] {
    return db.scalar("SELECT hubspot_sync_status FROM deals WHERE id = 'd1'") == "synced" &&
           db.count("SELECT count(*) FROM sync_queue WHERE status <> 'completed'") == 0;
  }, 60s)) << worker.process().log();
  const std::optional<HubspotObject> deal = hubspot.find("deals", "d1");
  const std::optional<HubspotObject> company = hubspot.find("companies", "co1");
  ASSERT_TRUE(deal && company);
  ASSERT_EQ(db.scalar("SELECT hubspot_deal_id FROM deals WHERE id = 'd1'"), deal->id);
  const int upserts = hubspot.requests_of("upsert");
  const int requests = static_cast<int>(hubspot.http().requests().size());
  const long long jobs = db.count("SELECT count(*) FROM sync_queue");
  const std::string row_before = db.scalar("SELECT concat_ws('|', name, stage, amount, close_date, updated_at) FROM deals");

  // The echo: every property of both objects, as HubSpot holds it.
  int echoed = 0;
  for (const HubspotObject* o : {&*deal, &*company}) {
    const std::string type = o == &*deal ? "deal" : "company";
    for (const auto& [property, value] : o->properties) {
      const std::string id = "echo-" + type + "-" + property;
      ASSERT_GE(producer.send("crm.sync.jobs", o->id,
                              cloud(id, "hubspot.object.changed", format_rfc3339(now_timestamp()),
                                    R"({"object_type":")" + type + R"(","object_id":")" + o->id +
                                        R"(","property":")" + property + R"(","value":")" + value +
                                        R"(","occurred_at":")" + o->updated_at + R"("})")),
                0);
      ++echoed;
    }
  }
  ASSERT_TRUE(wait_until([&] {
    return db.count("SELECT count(*) FROM processed_events WHERE event_id LIKE 'echo-%'") == echoed;
  }, 30s)) << worker.process().log();
  // Applied: HubSpot's change won the rule for the fields it may set (its
  // time is the deal's stage time now), with the values we have.
  EXPECT_EQ(db.scalar("SELECT stage_changed_at = '" + deal->updated_at + "' AND amount_changed_at = '" +
                      deal->updated_at + "' AND close_date_changed_at = '" + deal->updated_at + "' FROM deals"),
            "t");
  EXPECT_EQ(db.scalar("SELECT concat_ws('|', name, stage, amount, close_date, updated_at) FROM deals"), row_before);
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 0);
  // No push queued: a job would have been written in the transaction that
  // applied the echo, which has committed.
  EXPECT_EQ(db.count("SELECT count(*) FROM sync_queue"), jobs)
      << db.scalar("SELECT string_agg(concat_ws(' ', entity_type, entity_id, operation, status), ', ') FROM sync_queue");
  // And never pushed back: the executor would have claimed a job within a
  // second of its NOTIFY.
  EXPECT_FALSE(wait_until([&] {
    return hubspot.requests_of("upsert") != upserts || db.count("SELECT count(*) FROM sync_queue") != jobs;
  }, 5s)) << db.scalar("SELECT string_agg(concat_ws(' ', entity_type, entity_id, operation, status), ', ') FROM sync_queue");
  EXPECT_EQ(static_cast<int>(hubspot.http().requests().size()), requests);
  std::printf("scenario HubSpot echo: pushed deal and company in %d upserts (%d requests); %d echoed properties "
              "applied; then upserts %d, sync jobs %lld, in 5 s\n",
              upserts, requests, echoed, hubspot.requests_of("upsert"),
              db.count("SELECT count(*) FROM sync_queue"));
  std::fflush(stdout);
}

// Where Debian's faketime package puts libfaketime.
constexpr const char* kLibfaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

// Sets environment variables of this process for its scope, so that the
// children started meanwhile inherit them; restores them after.
class ScopedEnv {
 public:
  explicit ScopedEnv(std::map<std::string, std::string> values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_) {
      if (old) {
        ::setenv(name.c_str(), old->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// A worker whose clock is two hours ahead of the database's, or behind it.
//
// Guarantee: due times are compared with the database's now(), never with
// the worker's clock. A follow-up due in 15 s by the database's clock is sent
// once the database's clock reaches that time: not two hours early (worker
// ahead), not two hours late (worker behind: the wait's deadline is far
// shorter). One due in an hour is not sent.
//
// The skew is made on the database's side: its server runs under
// libfaketime, moved the other way. libfaketime 0.9.10 (Debian 12) cannot
// run the worker itself: its pthread_cond_timedwait wrapper mixes up the
// monotonic and wall clocks (libfaketime issues #469 and #503), which
// breaks librdkafka's timed waits: with the clock moved back, creating a
// client fails at once ("background thread(s) did not initialize within 60
// seconds"); moved forward, consumers hang. What the worker must not do,
// comparing its own clock with due times, is as wrong with either side's
// clock off.
class ShiftedClock : public ::testing::TestWithParam<int> {};

TEST_P(ShiftedClock, AFollowupFiresByTheDatabasesClock) {
  const int hours = GetParam();  // the worker's clock minus the database's
  ASSERT_TRUE(std::filesystem::exists(kLibfaketime))
      << kLibfaketime << " is missing: install Debian's faketime (scripts/install-deps.sh)";
  std::unique_ptr<PgCluster> pg;
  {
    // Only the wall clock moves: the monotonic clock's value means nothing
    // across processes, and moved back it could go below zero. Only the
    // server runs under libfaketime, not pg.sh (see PG_SERVER_ENV there).
    ScopedEnv faked({{"PG_SERVER_ENV", std::string("LD_PRELOAD=") + kLibfaketime + " FAKETIME=" +
                                           (hours > 0 ? "-" : "+") + std::to_string(std::abs(hours)) +
                                           "h FAKETIME_DONT_FAKE_MONOTONIC=1"}});
    pg = std::make_unique<PgCluster>();
  }
  TestDatabase db(DatabaseOptions{.pg_dir = pg->dir(), .roles = true});
  DevBrokerProcess broker(1, 1);
  FakeHttpServer sendgrid;
  sendgrid.set_default(kMailPath, answer(202, "", {{"X-Message-Id", "sg-1"}}));
  const std::string config =
      "[sendgrid]\nbase_url = \"" + sendgrid.base_url() +
      "\"\nfrom_email = \"sales@example.com\"\nfollowup_template = \"d-scenario\"\ntimeout = \"2s\"\n"
      "[followups]\nsend_window = \"00:00-24:00\"\nsend_on_weekends = true\n";
  WorkerProcess worker(db, broker.bootstrap(), {{"CRM_WORKER_SENDGRID_API_KEY", kSendgridKey}}, config);

  // Due times by the database's clock, which is off by the hours asked for.
  const long long db_now = std::stoll(db.scalar("SELECT (extract(epoch FROM now()) * 1000000)::bigint"));
  const long long real_now = now_timestamp().micros_since_epoch;
  const double offset_s = static_cast<double>(real_now - db_now) / 1e6;
  ASSERT_NEAR(offset_s, hours * 3600.0, 60) << "libfaketime did not move the database's clock";
  const std::string time = format_rfc3339(Timestamp{db_now});
  const std::string soon = format_rfc3339(Timestamp{db_now + 15'000'000});
  const std::string in_an_hour = format_rfc3339(Timestamp{db_now + 3'600'000'000LL});
  Producer producer(broker.bootstrap());
  ASSERT_GE(producer.send("crm.outreach.events", "p1",
                          discovered_event("e-p1", "p1", "Ada", time, R"("email":"ada@example.com")")),
            0);
  for (const auto& [id, due] : {std::pair{std::string("f-soon"), soon}, std::pair{std::string("f-later"), in_an_hour}}) {
    ASSERT_GE(producer.send("crm.followups", "p1",
                            cloud("e-" + id, "crm.followup.scheduled", time,
                                  R"({"followup_id":")" + id + R"(","prospect_id":"p1","kind":"email","due_at":")" +
                                      due + R"("})")),
              0);
  }
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM followups") == 2; }, 30s))
      << worker.process().log();
  // Both were there before they were due: sending one now would be early.
  ASSERT_EQ(db.scalar("SELECT string_agg(status, ',') FROM followups"), "scheduled,scheduled");

  ASSERT_TRUE(wait_until([&] { return db.scalar("SELECT status FROM followups WHERE id = 'f-soon'") == "sent"; },
                         90s))
      << worker.process().log();
  // Claimed at or after its due time by the database's clock...
  const long long late_ms = std::stoll(
      db.scalar("SELECT (extract(epoch FROM claimed_at - due_at) * 1000)::bigint FROM followups WHERE id = 'f-soon'"));
  EXPECT_GE(late_ms, 0);
  // ...and sent after it by the real clock (the due time fell 15 s after
  // real_now, less the moment the query above took).
  const std::vector<Received> sent = sendgrid.requests(kMailPath);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_GE(std::chrono::duration_cast<std::chrono::microseconds>(sent[0].at.time_since_epoch()).count(),
            real_now + 15'000'000 - 1'000'000);
  EXPECT_EQ(db.scalar("SELECT concat_ws('|', status, attempts) FROM followups WHERE id = 'f-later'"), "scheduled|0");
  std::printf("scenario worker clock %+d h: the worker's clock %+.0f s from the database's; the follow-up due in "
              "15 s claimed %lld ms after its due time by the database's clock; the one due in an hour not sent\n",
              hours, offset_s, late_ms);
  std::fflush(stdout);
}

INSTANTIATE_TEST_SUITE_P(Shift, ShiftedClock, ::testing::Values(2, -2),
                         [](const auto& info) { return info.param > 0 ? "WorkerAhead" : "WorkerBehind"; });

}  // namespace
}  // namespace crm::test
