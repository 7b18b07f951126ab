// Follow-up timers (SPEC.md §5 followups, §6 SendGrid) against the real
// PostgreSQL and a fake SendGrid: the scheduling rules with a fake clock
// (sequences, send windows, reminders, stale deals), the cancel re-check
// inside the claim, retries, the in-doubt rule, a reply racing the claim
// with several executors, and kill -9 in each window around the SendGrid
// call (at most one email, always).

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include <boost/json.hpp>
#include <prometheus/text_serializer.h>

#include "daemon/applier.h"
#include "daemon/followup_executor.h"
#include "daemon/logging.h"
#include "db/followups.h"
#include "tests/harness/fake_http.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"
#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

namespace json = boost::json;

constexpr const char* kApiKey = "SG.canary-key-do-not-log";

Answer accepted(const std::string& message_id) {
  Answer a;
  a.status = 202;
  a.headers = {{"X-Message-Id", message_id}};
  return a;
}

Answer status(int code, std::vector<std::pair<std::string, std::string>> headers = {}) {
  Answer a;
  a.status = code;
  a.headers = std::move(headers);
  a.body = R"({"errors":[{"message":"nope"}]})";
  return a;
}

Timestamp at(const std::string& rfc3339) { return *parse_rfc3339(rfc3339); }

// The custom args SendGrid received in one request.
json::object custom_args(const Received& r) {
  return json::parse(r.body).at("personalizations").at(0).at("custom_args").as_object();
}

std::string metrics_text(monitoring::Metrics& metrics) {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(metrics.registry()->Collect());
}

class FollowupTest : public ::testing::Test {
 protected:
  FollowupTest() {
    log::set_level(log::Level::kWarn);
    sendgrid_.set_default("/v3/mail/send", accepted("sg-default"));
    config_.sendgrid.base_url = sendgrid_.base_url();
    config_.sendgrid.api_key = Secret(kApiKey);
    config_.sendgrid.from_email = "sales@example.com";
    config_.sendgrid.followup_template = "d-default";
    config_.sendgrid.timeout = Millis{800};
    config_.slack.webhook_url = Secret("http://127.0.0.1:9/never-called");
    config_.followups.send_window = "00:00-24:00";
    config_.followups.send_on_weekends = true;
    config_.retry.initial_backoff = Millis{50};
    config_.retry.max_backoff = Millis{200};
    config_.retry.max_attempts = 3;
  }

  FollowupExecutor& executor() {
    if (!executor_) executor_ = std::make_unique<FollowupExecutor>(config_, db_.conninfo(), metrics_, "test");
    return *executor_;
  }

  void apply(const std::vector<HistoryEvent>& events) {
    Status s = apply_events(conn_, events, 1, db::projection_options(config_));
    ASSERT_TRUE(s.is_ok()) << s.reason() << ": " << s.message();
  }
  HistoryEvent ev(const std::string& type, const std::string& time, const std::string& data) {
    return cloud_event("e" + std::to_string(next_++), type, time, data);
  }
  HistoryEvent discovered(const std::string& pid, const std::string& time, const std::string& zone = "") {
    std::string data = R"({"prospect_id":")" + pid + R"(","name":"Ada","email":")" + pid + R"(@example.com")";
    if (!zone.empty()) data += R"(,"time_zone":")" + zone + "\"";
    return ev("crm.prospect.discovered", time, data + "}");
  }
  HistoryEvent schedule(const std::string& id, const std::string& pid, const std::string& kind,
                        const std::string& due, const std::string& time = "2026-03-01T08:00:00Z") {
    return ev("crm.followup.scheduled", time,
              R"({"followup_id":")" + id + R"(","prospect_id":")" + pid + R"(","kind":")" + kind +
                  R"(","due_at":")" + due + R"("})");
  }
  // A due time a moment in the real past, for tests that run on the
  // database's own clock.
  std::string just_due() const { return format_rfc3339(Timestamp{now_timestamp().micros_since_epoch - 1'000'000}); }

  FirePass fire(std::optional<Timestamp> now = std::nullopt) {
    Result<FirePass> pass = executor().fire_due(now);
    EXPECT_TRUE(pass.is_ok()) << (pass ? "" : pass.status().message());
    return pass ? *pass : FirePass{};
  }
  // Fires until nothing due is left (emails go one per claim).
  FirePass fire_all(std::optional<Timestamp> now = std::nullopt) {
    FirePass total;
    for (int i = 0; i < 100; ++i) {
      const FirePass p = fire(now);
      total.sent += p.sent;
      total.queued += p.queued;
      total.cancelled += p.cancelled;
      total.deferred += p.deferred;
      total.retried += p.retried;
      total.waiting += p.waiting;
      total.dead += p.dead;
      total.in_doubt += p.in_doubt;
      if (!p.more) break;
    }
    return total;
  }
  std::string q(const std::string& sql) const { return db_.scalar(sql); }
  size_t sends() const { return sendgrid_.requests("/v3/mail/send").size(); }

  TestDatabase db_;
  db::Database conn_{db_.conninfo()};
  FakeHttpServer sendgrid_;
  Config config_;
  monitoring::Metrics metrics_{{}, {}};
  std::unique_ptr<FollowupExecutor> executor_;
  int next_ = 0;
};

TEST_F(FollowupTest, TheSequenceFiresOnTimeRecordsItsEmailAndSchedulesTheNextStep) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"),
         ev("crm.email.sent", "2026-03-01T10:00:00Z",
            R"({"email_id":"m1","prospect_id":"p1","template":"intro"})")});
  // One second early: nothing.
  FirePass early = fire(at("2026-03-04T09:59:59Z"));
  EXPECT_EQ(early.sent, 0);
  EXPECT_EQ(sends(), 0u);

  sendgrid_.script("/v3/mail/send", {accepted("sg-step1")});
  FirePass due = fire(at("2026-03-04T10:00:00Z"));
  EXPECT_EQ(due.sent, 1);
  ASSERT_EQ(sends(), 1u);
  const Received r = sendgrid_.requests("/v3/mail/send")[0];
  EXPECT_EQ(r.headers.at("authorization"), std::string("Bearer ") + kApiKey);
  const json::object body = json::parse(r.body).as_object();
  EXPECT_EQ(body.at("template_id"), "d-default");  // "intro" is not a dynamic template
  EXPECT_EQ(body.at("from").at("email"), "sales@example.com");
  EXPECT_EQ(body.at("personalizations").at(0).at("to").at(0).at("email"), "p1@example.com");
  const json::object args = custom_args(r);
  EXPECT_EQ(args.at("email_id"), "m1:followup:1");
  EXPECT_EQ(args.at("followup_id"), "m1:followup:1");
  EXPECT_EQ(args.at("prospect_id"), "p1");

  EXPECT_EQ(q("SELECT concat_ws('|', status, provider_message_id, attempts, sent_at IS NOT NULL)"
              " FROM followups WHERE id = 'm1:followup:1'"),
            "sent|sg-step1|1|t");
  // Its own email: counted as sent, linked to SendGrid's message id.
  EXPECT_EQ(q("SELECT concat_ws('|', status, sequence_step, provider_message_id, sent_at = "
              "'2026-03-04T10:00:00Z') FROM email_activities WHERE id = 'm1:followup:1'"),
            "sent|1|sg-step1|t");
  EXPECT_EQ(q("SELECT emails_sent_count FROM prospects WHERE id = 'p1'"), "2");
  // The next step: 7d − 3d after this one went out.
  EXPECT_EQ(q("SELECT concat_ws('|', status, sequence_step, email_id, due_at = '2026-03-08T10:00:00Z')"
              " FROM followups WHERE id = 'm1:followup:2'"),
            "scheduled|2|m1|t");
  EXPECT_EQ(q("SELECT next_follow_up_at = '2026-03-08T10:00:00Z' FROM prospects WHERE id = 'p1'"), "t");

  // Firing again changes nothing; the last step schedules no third.
  EXPECT_EQ(fire(at("2026-03-04T10:00:00Z")).sent, 0);
  EXPECT_EQ(fire(at("2026-03-08T10:00:00Z")).sent, 1);
  EXPECT_EQ(sends(), 2u);
  EXPECT_EQ(db_.count("SELECT count(*) FROM followups"), 2);
  EXPECT_EQ(q("SELECT emails_sent_count FROM prospects WHERE id = 'p1'"), "3");
}

// A reply that happened after the first email but arrives only after step 1
// went out still stops step 2: in time order it would have stopped step 1.
TEST_F(FollowupTest, ALateReplyStopsTheRestOfTheSequence) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"),
         ev("crm.email.sent", "2026-03-01T10:00:00Z", R"({"email_id":"m1","prospect_id":"p1"})")});
  EXPECT_EQ(fire(at("2026-03-04T10:00:00Z")).sent, 1);
  ASSERT_EQ(q("SELECT status FROM followups WHERE id = 'm1:followup:2'"), "scheduled");
  apply({ev("crm.sms.replied", "2026-03-02T10:00:00Z", R"({"sms_id":"s1","prospect_id":"p1","body":"stop"})")});
  EXPECT_EQ(q("SELECT status || ':' || cancel_reason FROM followups WHERE id = 'm1:followup:2'"),
            "cancelled:replied");
  EXPECT_EQ(fire(at("2026-03-08T10:00:00Z")).sent, 0);
  EXPECT_EQ(sends(), 1u);
}

TEST_F(FollowupTest, AReplyJustBeforeTheDueTimeCancelsAndNothingIsSent) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"),
         ev("crm.email.sent", "2026-03-01T10:00:00Z", R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.email.replied", "2026-03-04T09:59:59Z", R"({"email_id":"m1"})")});
  FirePass pass = fire(at("2026-03-04T10:00:00Z"));
  EXPECT_EQ(pass.sent, 0);
  EXPECT_EQ(sends(), 0u);
  EXPECT_EQ(q("SELECT status || ':' || cancel_reason FROM followups"), "cancelled:replied");
}

TEST_F(FollowupTest, TheClaimRechecksRepliesSuppressionClosesAndCancels) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"), discovered("p2", "2026-03-01T09:00:00Z"),
         discovered("p3", "2026-03-01T09:00:00Z"), discovered("p4", "2026-03-01T09:00:00Z"),
         schedule("f1", "p1", "email", "2026-03-05T10:00:00Z"),
         schedule("f2", "p2", "email", "2026-03-05T10:00:00Z"),
         schedule("f3", "p3", "email", "2026-03-05T10:00:00Z"),
         schedule("f4", "p4", "email", "2026-03-05T10:00:00Z"),
         ev("crm.sms.replied", "2026-03-02T10:00:00Z", R"({"sms_id":"s1","prospect_id":"p1","body":"no"})"),
         ev("crm.email.unsubscribed", "2026-03-02T10:00:00Z", R"({"email_id":"x2","prospect_id":"p2"})"),
         ev("crm.payment.completed", "2026-03-02T10:00:00Z",
            R"({"payment_id":"pay","prospect_id":"p3","amount":1,"currency":"EUR"})"),
         ev("crm.followup.cancelled", "2026-03-02T10:00:00Z", R"({"followup_id":"f4"})")});
  ASSERT_EQ(q("SELECT string_agg(status, ',' ORDER BY id) FROM followups"),
            "cancelled,cancelled,cancelled,cancelled");
  // Another writer (or a race) put them back: the claim itself must refuse.
  q("UPDATE followups SET status = 'scheduled', cancel_reason = NULL, cancelled_by_event = NULL,"
    " cancelled_at = NULL RETURNING 1");
  FirePass pass = fire_all(at("2026-03-05T10:00:00Z"));
  EXPECT_EQ(pass.cancelled, 4);
  EXPECT_EQ(pass.sent, 0);
  EXPECT_EQ(sends(), 0u);
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status || ':' || cancel_reason, ',' ORDER BY id) FROM followups"),
            "f1:cancelled:replied,f2:cancelled:unsubscribed,f3:cancelled:closed_won,f4:cancelled:cancelled");
}

TEST_F(FollowupTest, DuplicateSchedulesMakeOneTimerAndACancelBeforeItsScheduleWins) {
  const HistoryEvent first = schedule("f1", "p1", "email", "2026-03-05T10:00:00Z");
  apply({discovered("p1", "2026-03-01T09:00:00Z"), first, first,
         schedule("f1", "p1", "email", "2026-03-06T10:00:00Z", "2026-03-01T09:30:00Z"),
         // Cancel first, schedule later (in arrival order and in time).
         ev("crm.followup.cancelled", "2026-03-01T07:00:00Z", R"({"followup_id":"f2"})"),
         schedule("f2", "p1", "email", "2026-03-05T10:00:00Z")});
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, cancel_reason, due_at), ',' ORDER BY id)"
              " FROM followups"),
            "f1|scheduled|2026-03-06 10:00:00+00,f2|cancelled|cancelled|2026-03-05 10:00:00+00");
  EXPECT_EQ(fire(at("2026-03-05T10:00:00Z")).sent, 0);  // f1 moved a day later
  EXPECT_EQ(fire(at("2026-03-06T10:00:00Z")).sent, 1);
  EXPECT_EQ(fire(at("2026-03-07T10:00:00Z")).sent, 0);
  ASSERT_EQ(sends(), 1u);
  EXPECT_EQ(custom_args(sendgrid_.requests()[0]).at("followup_id"), "f1");
  // An explicit follow-up starts no sequence of its own.
  EXPECT_EQ(db_.count("SELECT count(*) FROM followups"), 2);
}

TEST_F(FollowupTest, SendWindowsMoveADueEmailToTheProspectsNextAllowedMoment) {
  config_.followups.send_window = "09:00-17:00";
  config_.followups.send_on_weekends = false;
  // Friday 18:00 in New York (EST); the US moves to EDT on Sunday 8 March.
  apply({discovered("ny", "2026-03-01T09:00:00Z", "America/New_York"),
         discovered("nowhere", "2026-03-01T09:00:00Z", "Not/AZone"),
         schedule("f-ny", "ny", "email", "2026-03-06T23:00:00Z"),
         schedule("f-utc", "nowhere", "email", "2026-03-06T23:00:00Z"),
         schedule("r-ny", "ny", "call_reminder", "2026-03-06T23:00:00Z")});
  FirePass pass = fire_all(at("2026-03-06T23:00:00Z"));
  EXPECT_EQ(pass.deferred, 2);
  EXPECT_EQ(pass.queued, 1);  // reminders are not held back
  EXPECT_EQ(sends(), 0u);
  // Monday 09:00 EDT, and 09:00 UTC for the unknown zone (the default).
  EXPECT_EQ(q("SELECT string_agg(id || '@' || next_attempt_at, ',' ORDER BY id) FROM followups"
              " WHERE kind = 'email'"),
            "f-ny@2026-03-09 13:00:00+00,f-utc@2026-03-09 09:00:00+00");
  EXPECT_EQ(fire(at("2026-03-09T12:59:59Z")).sent, 1);  // f-utc
  EXPECT_EQ(fire(at("2026-03-09T13:00:00Z")).sent, 1);  // f-ny
  EXPECT_EQ(sends(), 2u);

  // A timer deferred to the window and then rescheduled follows the new
  // due time, not the old deferral.
  apply({schedule("f-moved", "ny", "email", "2026-03-07T12:00:00Z")});
  EXPECT_EQ(fire(at("2026-03-07T12:00:00Z")).deferred, 1);  // Saturday
  apply({schedule("f-moved", "ny", "email", "2026-03-20T15:00:00Z", "2026-03-07T13:00:00Z")});
  EXPECT_EQ(q("SELECT concat_ws('|', next_attempt_at IS NULL, due_at) FROM followups WHERE id = 'f-moved'"),
            "t|2026-03-20 15:00:00+00");
  EXPECT_EQ(fire(at("2026-03-09T13:00:00Z")).sent, 0);
  EXPECT_EQ(fire(at("2026-03-20T15:00:00Z")).sent, 1);
  EXPECT_EQ(sends(), 3u);

  // The window function itself, on the database's time zone rules.
  auto next = [&](const std::string& t, const std::string& zone, int start, int end, bool weekends) {
    return q("SELECT crm_send_window_start('" + t + "', '" + zone + "', 'UTC', " + std::to_string(start) +
             ", " + std::to_string(end) + ", " + (weekends ? "true" : "false") + ") AT TIME ZONE 'UTC'");
  };
  EXPECT_EQ(next("2026-03-10T10:00:00Z", "Europe/Berlin", 480, 1200, false), "2026-03-10 10:00:00");
  EXPECT_EQ(next("2026-03-10T05:00:00Z", "Europe/Berlin", 480, 1200, false), "2026-03-10 07:00:00");
  EXPECT_EQ(next("2026-03-10T19:00:00Z", "Europe/Berlin", 480, 1200, false), "2026-03-11 07:00:00");
  EXPECT_EQ(next("2026-03-14T10:00:00Z", "Europe/Berlin", 480, 1200, false), "2026-03-16 07:00:00");
  EXPECT_EQ(next("2026-03-14T10:00:00Z", "Europe/Berlin", 480, 1200, true), "2026-03-14 10:00:00");
  EXPECT_EQ(next("2026-03-14T10:00:00Z", "Asia/Tokyo", 0, 1440, true), "2026-03-14 10:00:00");
  // Not an IANA name: the default zone, not a POSIX offset with its sign inverted.
  EXPECT_EQ(next("2026-03-10T05:00:00Z", "+03:00", 480, 1200, false), "2026-03-10 08:00:00");
}

TEST_F(FollowupTest, CallRemindersAndStaleDealsGoToTheSlackOutbox) {
  config_.followups.stale_deal_after = Millis{2LL * 24 * 3600 * 1000};
  apply({discovered("p1", "2026-03-01T09:00:00Z"),
         ev("crm.call.scheduled", "2026-03-01T10:00:00Z",
            R"({"call_id":"c1","prospect_id":"p1","scheduled_at":"2026-03-02T15:00:00Z"})"),
         ev("crm.deal.stage_changed", "2026-03-01T11:00:00Z",
            R"({"deal_id":"d1","prospect_id":"p1","stage":"proposal"})")});
  // Stale two days after the last activity of the deal or its prospect.
  EXPECT_EQ(q("SELECT due_at FROM followups WHERE id = 'd1:stale'"), "2026-03-03 11:00:00+00");
  FirePass reminder = fire(at("2026-03-02T14:45:00Z"));
  EXPECT_EQ(reminder.queued, 1);
  // Activity moves the alert.
  apply({ev("crm.email.sent", "2026-03-02T16:00:00Z", R"({"email_id":"m1","prospect_id":"p1"})")});
  EXPECT_EQ(fire(at("2026-03-03T11:00:00Z")).queued, 0);
  EXPECT_EQ(fire(at("2026-03-04T16:00:00Z")).queued, 1);
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, kind, payload->>'followup_id'), ',' ORDER BY id)"
              " FROM notifications"),
            "followup:c1:reminder|call_reminder|c1:reminder,followup:d1:stale|stale_deal|d1:stale");
  EXPECT_EQ(q("SELECT string_agg(status, ',' ORDER BY id) FROM followups WHERE kind <> 'email'"), "sent,sent");
  EXPECT_EQ(sends(), 0u);
}

TEST_F(FollowupTest, RefusalsAreRetriedWithBackoffAndA4xxEndsIt) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"), discovered("p2", "2026-03-01T09:00:00Z"),
         schedule("f1", "p1", "email", just_due())});
  sendgrid_.script("/v3/mail/send",
                   {status(503), status(429, {{"Retry-After", "1"}}), accepted("sg-after-retries")});
  EXPECT_EQ(fire().retried, 1);
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts, last_error) FROM followups"),
            "scheduled|1|SendGrid answered 503");
  ASSERT_TRUE(wait_until([&] { return fire().retried == 1; }, 3s));
  // Retry-After: 1 → not before a second from now.
  EXPECT_EQ(q("SELECT next_attempt_at > now() + interval '900 milliseconds' FROM followups"), "t");
  EXPECT_EQ(fire().sent, 0);
  ASSERT_TRUE(wait_until([&] { return fire().sent == 1; }, 3s));
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts, provider_message_id) FROM followups"),
            "sent|3|sg-after-retries");

  // A 400 is final: dead at once, never sent, never asked again.
  apply({schedule("f2", "p2", "email", just_due())});
  sendgrid_.script("/v3/mail/send", {status(400)});
  EXPECT_EQ(fire().dead, 1);
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts) FROM followups WHERE id = 'f2'"), "dead|1");
  EXPECT_EQ(fire().sent + fire().dead, 0);
  EXPECT_EQ(sends(), 4u);

  // Out of attempts: dead after exactly retry.max_attempts requests.
  apply({discovered("p3", "2026-03-01T09:00:00Z"), schedule("f3", "p3", "email", just_due())});
  sendgrid_.set_default("/v3/mail/send", status(500));
  ASSERT_TRUE(wait_until([&] { fire(); return q("SELECT status FROM followups WHERE id = 'f3'") == "dead"; }, 5s));
  EXPECT_EQ(sends(), 7u);
  const std::string text = metrics_text(metrics_);
  EXPECT_EQ(metric_sum(text, "crm_worker_retries_total{api=\"sendgrid\""), 4);
  EXPECT_EQ(metric_sum(text, "crm_worker_external_requests_total{api=\"sendgrid\",code=\"500\""), 3);
  // The API key reaches no row and no metric.
  EXPECT_EQ(db_.count(std::string("SELECT count(*) FROM followups WHERE followups::text LIKE '%canary%'")), 0);
  EXPECT_EQ(text.find("canary"), std::string::npos);
}

// Timers and prospects come on different topics: a follow-up can come due
// before its prospect's discovery is applied. It waits for it, decided in
// the claim (never `sending`, so no crash can leave it in doubt; no request
// and no attempt spent), looked at again at growing intervals, and goes to
// the address the discovery brings. A prospect discovered without an
// address is given up at once; one never discovered, after
// followups.prospect_wait.
TEST_F(FollowupTest, AnEmailDueBeforeItsProspectIsDiscoveredWaitsForIt) {
  config_.retry.initial_backoff = Millis{20};
  apply({schedule("f1", "p1", "email", just_due())});
  const FirePass first = fire();
  EXPECT_EQ(first.waiting, 1);
  EXPECT_EQ(first.dead + first.retried + first.sent + first.in_doubt, 0);
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts, lease_owner IS NULL, claimed_at IS NULL, last_error)"
              " FROM followups WHERE id = 'f1'"),
            "scheduled|0|t|t|waiting for the prospect: no crm.prospect.discovered of it is applied yet");
  // Looked at again after initial_backoff, then after as long as it has
  // waited so far (at most max_backoff).
  EXPECT_EQ(q("SELECT next_attempt_at - wait_started_at = interval '20 milliseconds' FROM followups"
              " WHERE id = 'f1'"),
            "t");
  ASSERT_TRUE(wait_until([&] { return fire().waiting == 1; }, 3s));
  EXPECT_EQ(q("SELECT next_attempt_at - updated_at = LEAST(updated_at - wait_started_at, interval '200 milliseconds')"
              " AND updated_at - wait_started_at >= interval '20 milliseconds' FROM followups WHERE id = 'f1'"),
            "t");
  EXPECT_EQ(sends(), 0u);

  apply({discovered("p1", "2026-03-01T09:00:00Z")});
  ASSERT_TRUE(wait_until([&] { return fire().sent == 1; }, 3s));
  ASSERT_EQ(sends(), 1u);
  const Received r = sendgrid_.requests("/v3/mail/send")[0];
  EXPECT_EQ(json::parse(r.body).at("personalizations").at(0).at("to").at(0).at("email"), "p1@example.com");
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts) FROM followups WHERE id = 'f1'"), "sent|1");

  // Discovered without an address: dead at once.
  apply({ev("crm.prospect.discovered", "2026-03-01T09:00:00Z", R"({"prospect_id":"p2","name":"Bo"})"),
         schedule("f2", "p2", "email", just_due())});
  EXPECT_EQ(fire().dead, 1);
  EXPECT_EQ(q("SELECT concat_ws('|', status, attempts, last_error) FROM followups WHERE id = 'f2'"),
            "dead|1|the prospect has no email address");

  // Never discovered: given up once it has waited prospect_wait, never
  // sent, no attempt spent.
  config_.followups.prospect_wait = Millis{300};
  apply({schedule("f3", "p3", "email", just_due())});
  ASSERT_TRUE(wait_until([&] { fire(); return q("SELECT status FROM followups WHERE id = 'f3'") == "dead"; }, 5s));
  EXPECT_EQ(q("SELECT concat_ws('|', attempts, last_error) FROM followups WHERE id = 'f3'"),
            "0|the prospect was never discovered: no crm.prospect.discovered of it was applied within "
            "followups.prospect_wait, giving up");
  EXPECT_EQ(q("SELECT updated_at - wait_started_at >= interval '300 milliseconds' FROM followups WHERE id = 'f3'"),
            "t");
  EXPECT_EQ(sends(), 1u);
  EXPECT_EQ(metric_sum(metrics_text(metrics_), "crm_worker_retries_total{api=\"sendgrid\""), 0);

  // "0s": no wait at all.
  config_.followups.prospect_wait = Millis{0};
  apply({schedule("f4", "p4", "email", just_due())});
  EXPECT_EQ(fire().dead, 1);
  EXPECT_EQ(q("SELECT status FROM followups WHERE id = 'f4'"), "dead");
}

// A 429 is SendGrid saying "not now" to the whole account: every email of
// every instance waits for its Retry-After, not just the refused one.
TEST_F(FollowupTest, A429HoldsEveryEmailForItsRetryAfter) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"), discovered("p2", "2026-03-01T09:00:00Z"),
         schedule("f1", "p1", "email", just_due()), schedule("f2", "p2", "email", just_due())});
  sendgrid_.script("/v3/mail/send", {status(429, {{"Retry-After", "1"}})});
  EXPECT_EQ(fire().retried, 1);
  FollowupExecutor other(config_, db_.conninfo(), metrics_, "other-instance");
  ASSERT_TRUE(other.fire_due().is_ok());
  EXPECT_EQ(fire().sent, 0);
  EXPECT_EQ(sends(), 1u);
  {
    auto c = db_.connect();
    pqxx::work tx(*c);
    const auto wait = db::next_due_in(tx, {"email", "call_reminder"});
    ASSERT_TRUE(wait.has_value());
    EXPECT_GT(wait->count(), 500);  // the executors sleep until the slot frees
  }
  ASSERT_TRUE(wait_until([&] { fire(); return sends() == 3; }, 5s));
  const auto got = sendgrid_.requests("/v3/mail/send");
  EXPECT_GE(got[1].at - got[0].at, std::chrono::milliseconds(990));
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM followups"), "f1:sent,f2:sent");
}

TEST_F(FollowupTest, NoAnswerLeavesItInDoubtAndItIsNeverSentTwice) {
  apply({discovered("p1", "2026-03-01T09:00:00Z"), schedule("f1", "p1", "email", just_due())});
  Answer hang;
  hang.kind = Answer::Kind::kHang;
  sendgrid_.script("/v3/mail/send", {hang});
  FirePass pass = fire();
  EXPECT_EQ(pass.in_doubt, 1);
  EXPECT_EQ(q("SELECT status FROM followups"), "failed");
  EXPECT_NE(q("SELECT last_error FROM followups").find("in doubt"), std::string::npos);
  for (int i = 0; i < 3; ++i) fire();
  EXPECT_EQ(sends(), 1u);
  ASSERT_TRUE(executor().report().is_ok());
  EXPECT_EQ(metric_sum(metrics_text(metrics_), "crm_worker_followups{status=\"failed\""), 1);

  // The operator lists what is in doubt and checks SendGrid: f1 did not go
  // out (now it does, once); f2 did (recorded as an email, never resent).
  const std::map<std::string, std::string> env = {{"CRM_WORKER_DATABASE_URL", db_.url()}};
  apply({discovered("p2", "2026-03-01T09:00:00Z"), schedule("f2", "p2", "email", just_due())});
  sendgrid_.script("/v3/mail/send", {hang});
  EXPECT_EQ(fire().in_doubt, 1);
  auto [code, listing] = run_cli({"followups", "list"}, env);
  EXPECT_EQ(code, 0) << listing;
  EXPECT_NE(listing.find("f1"), std::string::npos) << listing;
  EXPECT_NE(listing.find("2 follow-up(s) failed"), std::string::npos) << listing;
  EXPECT_EQ(run_cli({"followups", "resolve", "--id", "f1", "--not-sent"}, env).first, 0);
  EXPECT_EQ(run_cli({"followups", "resolve", "--id", "f1", "--not-sent"}, env).first, 1);  // not in doubt now
  EXPECT_EQ(run_cli({"followups", "resolve", "--id", "f2"}, env).first, 2);               // verdict missing
  EXPECT_EQ(run_cli({"followups", "resolve", "--id", "f2", "--sent"}, env).first, 0);
  EXPECT_EQ(fire().sent, 1);
  EXPECT_EQ(fire().sent, 0);
  EXPECT_EQ(sends(), 3u);
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM followups"), "f1:sent,f2:sent");
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM email_activities"),
            "f1:sent,f2:sent");
}

TEST_F(FollowupTest, TimersDueWhileEveryWorkerWasDownFireOnceLateAndTheMetricShowsIt) {
  apply({discovered("p1", "2026-03-01T09:00:00Z")});
  for (int i = 0; i < 5; ++i) {
    apply({schedule("late" + std::to_string(i), "p1", "call_reminder",
                    format_rfc3339(Timestamp{now_timestamp().micros_since_epoch - 600'000'000LL}))});
  }
  ASSERT_TRUE(executor().report().is_ok());
  const double overdue = metric_sum(metrics_text(metrics_), "crm_worker_followups_overdue_seconds");
  EXPECT_GE(overdue, 599);
  EXPECT_LT(overdue, 700);
  EXPECT_EQ(fire().queued, 5);
  EXPECT_EQ(fire().queued, 0);
  ASSERT_TRUE(executor().report().is_ok());
  const std::string text = metrics_text(metrics_);
  EXPECT_EQ(metric_sum(text, "crm_worker_followups_overdue_seconds"), 0);
  EXPECT_EQ(metric_sum(text, "crm_worker_followups{status=\"sent\""), 5);
  EXPECT_EQ(db_.count("SELECT count(*) FROM notifications"), 5);
  EXPECT_GE(db_.count("SELECT count(*) FROM followups WHERE claimed_at - due_at >= interval '10 minutes'"), 5);
}

// Executors sleep until the earliest due time; a timer created or moved by
// anyone (an event, another instance, the web app) must wake them.
TEST_F(FollowupTest, ANewOrMovedTimerWakesListeningExecutorsAndNothingElseDoes) {
  db::Database listener(db_.conninfo());
  listener.listen("crm_followups");
  EXPECT_TRUE(listener.await_notification(0ms));  // just connected: look once
  EXPECT_FALSE(listener.await_notification(100ms));
  apply({schedule("f1", "p1", "email", "2026-03-05T10:00:00Z")});
  EXPECT_TRUE(listener.await_notification(5s));
  q("UPDATE followups SET due_at = due_at - interval '1 day' RETURNING 1");  // another writer
  EXPECT_TRUE(listener.await_notification(5s));
  q("UPDATE followups SET status = 'dead' RETURNING 1");  // not a live timer
  EXPECT_FALSE(listener.await_notification(200ms));
}

TEST_F(FollowupTest, StoppingFinishesTheEmailInFlightAndReleasesTheRest) {
  const std::string due = just_due();
  apply({discovered("p1", "2026-03-01T09:00:00Z"), discovered("p2", "2026-03-01T09:00:00Z"),
         schedule("f1", "p1", "email", due), schedule("f2", "p2", "email", due)});
  Answer slow = accepted("sg-slow");
  slow.delay = 500ms;
  sendgrid_.script("/v3/mail/send", {slow});
  std::atomic<bool> stop{false};
  std::thread runner([&] { executor().run(stop); });
  ASSERT_TRUE(sendgrid_.wait_for_requests("/v3/mail/send", 1, 5s));
  stop = true;  // while SendGrid is answering the first
  runner.join();
  EXPECT_EQ(sends(), 1u);
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, attempts), ',' ORDER BY id) FROM followups"),
            "f1|sent|1,f2|scheduled|0");
}

// A reply and the due time in the same moment, many times, three executors
// racing: the reply's transaction either cancels the row (then no email,
// ever) or finds it already taken (the claim committed first, the email was
// on its way before the reply existed). Never an email after a reply that
// committed first, never two emails.
TEST_F(FollowupTest, AReplyRacingTheClaimIsNeverFollowedByAnEmail) {
  // 90 races; the test plan's 1,000 at full size (CRM_SCENARIO_SCALE=full).
  const int kRounds = Scenario::scaled(6, 67);
  constexpr int kPerRound = 15;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<FollowupExecutor>> executors;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    executors.push_back(std::make_unique<FollowupExecutor>(config_, db_.conninfo(), metrics_,
                                                           "racer-" + std::to_string(i)));
  }
  for (auto& e : executors) threads.emplace_back([&e, &stop] { e->run(stop); });

  std::mt19937 rng(std::random_device{}());
  std::map<std::string, bool> cancelled_by_reply;  // followup id → the reply won
  const db::ProjectionOptions options = db::projection_options(config_);
  auto replies = db_.connect();
  for (int round = 0; round < kRounds; ++round) {
    const long long due = now_timestamp().micros_since_epoch + 800'000;
    std::vector<HistoryEvent> schedules;
    for (int k = 0; k < kPerRound; ++k) {
      const std::string pid = "r" + std::to_string(round) + "-" + std::to_string(k);
      schedules.push_back(discovered(pid, "2026-03-01T09:00:00Z"));
      schedules.push_back(schedule("f-" + pid, pid, "email", format_rfc3339(Timestamp{due})));
    }
    ASSERT_TRUE(apply_events(conn_, schedules, schedules.size(), options).is_ok());
    // Replies spread from well before the due time to well after it.
    std::this_thread::sleep_until(std::chrono::system_clock::time_point(std::chrono::microseconds(due)) -
                                  std::chrono::milliseconds(100));
    for (int k = 0; k < kPerRound; ++k) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 8000));
      const std::string pid = "r" + std::to_string(round) + "-" + std::to_string(k);
      HistoryEvent reply = ev("crm.sms.replied", format_rfc3339(now_timestamp()),
                              R"({"sms_id":"s-)" + pid + R"(","prospect_id":")" + pid + R"(","body":"stop"})");
      pqxx::work tx(*replies);
      std::vector<WorkItem> items{work_item(reply, 0)};
      std::vector<ItemResult> results;
      ASSERT_TRUE(apply_items(tx, items, options, &results).is_ok());
      // What this transaction will commit: cancelled by it, or already taken.
      const std::string st = tx.exec_params1("SELECT status FROM followups WHERE id = $1", "f-" + pid)[0].c_str();
      tx.commit();
      cancelled_by_reply["f-" + pid] = st == "cancelled";
    }
  }
  // Let every claimed email finish.
  ASSERT_TRUE(wait_until([&] { return db_.count("SELECT count(*) FROM followups WHERE status IN ('scheduled', 'sending')") == 0; }, 10s));
  stop = true;
  for (auto& t : threads) t.join();

  std::map<std::string, int> emails;
  for (const Received& r : sendgrid_.requests("/v3/mail/send")) {
    ++emails[std::string(custom_args(r).at("followup_id").as_string())];
  }
  int replies_won = 0;
  for (const auto& [id, won] : cancelled_by_reply) {
    SCOPED_TRACE(id);
    if (won) {
      ++replies_won;
      EXPECT_EQ(emails.count(id), 0u) << "sent after the reply cancelled it";
      EXPECT_EQ(q("SELECT status FROM followups WHERE id = '" + id + "'"), "cancelled");
    } else {
      EXPECT_EQ(emails[id], 1);
      EXPECT_EQ(q("SELECT status FROM followups WHERE id = '" + id + "'"), "sent");
    }
  }
  for (const auto& [id, n] : emails) EXPECT_EQ(n, 1) << id;
  std::printf("race: %d of %d replies came first\n", replies_won, kRounds * kPerRound);
  // Both sides of the race were exercised.
  EXPECT_GT(replies_won, 0);
  EXPECT_LT(replies_won, kRounds * kPerRound);
}

// kill -9 in each window around the SendGrid call, with the real worker:
// after the restart the follow-up is reported in doubt, never sent again.
TEST(FollowupCrash, KillNineAroundTheSendgridCallNeverSendsTwice) {
  DevBrokerProcess broker(1, 1);
  for (const char* point : {"after_followup_sending", "after_sendgrid_call"}) {
    SCOPED_TRACE(point);
    TestDatabase db;
    FakeHttpServer sendgrid;
    sendgrid.set_default("/v3/mail/send", accepted("sg-1"));
    const std::string config =
        "[sendgrid]\nbase_url = \"" + sendgrid.base_url() +
        "\"\nfrom_email = \"sales@example.com\"\nfollowup_template = \"d-x\"\ntimeout = \"500ms\"\n"
        "[followups]\nsend_window = \"00:00-24:00\"\nsend_on_weekends = true\n";
    const std::map<std::string, std::string> env = {{"CRM_WORKER_SENDGRID_API_KEY", kApiKey}};
    {
      db::Database conn(db.conninfo());
      const std::string due = format_rfc3339(Timestamp{now_timestamp().micros_since_epoch - 1'000'000});
      ASSERT_TRUE(apply_events(conn,
                               {cloud_event("d1", "crm.prospect.discovered", "2026-03-01T09:00:00Z",
                                            R"({"prospect_id":"p1","name":"Ada","email":"ada@example.com"})"),
                                cloud_event("s1", "crm.followup.scheduled", "2026-03-01T09:00:00Z",
                                            R"({"followup_id":"f1","prospect_id":"p1","kind":"email","due_at":")" +
                                                due + R"("})")},
                               1, db::ProjectionOptions{})
                      .is_ok());
    }
    std::map<std::string, std::string> crash_env = env;
    crash_env["CRM_WORKER_CRASH_AT"] = point;
    WorkerProcess crashing(db, broker.bootstrap(), crash_env, config);
    auto code = crashing.process().wait(30s);
    ASSERT_TRUE(code.has_value()) << crashing.process().log();
    EXPECT_EQ(*code, 128 + SIGKILL);
    const size_t sent_before = sendgrid.requests("/v3/mail/send").size();
    EXPECT_EQ(sent_before, std::string(point) == "after_sendgrid_call" ? 1u : 0u);
    EXPECT_EQ(db.scalar("SELECT status FROM followups"), "sending");

    WorkerProcess worker(db, broker.bootstrap(), env, config);
    // The lease (timeout + 10 s) passes, the next report finds the row.
    ASSERT_TRUE(wait_until([&] { return db.scalar("SELECT status FROM followups") == "failed"; }, 40s))
        << worker.process().log();
    ASSERT_TRUE(wait_until([&] {
      return metric_sum(worker.http_get("/metrics").second, "crm_worker_followups{status=\"failed\"") == 1;
    }, 10s));
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(sendgrid.requests("/v3/mail/send").size(), sent_before);
    EXPECT_NE(worker.process().log().find("in doubt"), std::string::npos);
    EXPECT_EQ(worker.process().log().find("canary"), std::string::npos);
  }
}

}  // namespace
}  // namespace crm::test
