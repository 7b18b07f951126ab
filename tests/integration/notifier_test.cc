// The Slack notifier (SPEC.md §6) against the real PostgreSQL and a fake
// Slack webhook. Guarantees checked, one per test:
//   * at most one message per second for ALL instances together (the shared
//     `api_slots` row), every notification delivered exactly once;
//   * a 429's Retry-After holds every instance, for every notification;
//   * 5xx, timeouts and dropped connections are retried, then delivered;
//   * a refusal that will never change (404, 410) is `dead` at once;
//   * `dead` after exactly retry.max_attempts requests;
//   * a row left `sending` by a crash is sent again after its lease, and
//     one whose lease still runs is not;
//   * text from events is escaped for Slack (&, <, >) in the JSON `text`;
//   * the webhook URL (the secret) reaches neither the table, the log, nor
//     the metrics, even when Slack echoes it back.
//
// Tests that are about the real loop drive Notifier::run on threads of their
// own, as the daemon does; tests about one exchange drive send_one() and
// free the shared slot between calls with SQL, so they need not wait out the
// one-second rate limit.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/text_serializer.h>
#include <boost/json.hpp>

#include "daemon/logging.h"
#include "daemon/notifier.h"
#include "tests/harness/fake_http.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

namespace json = boost::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// The webhook URL is the secret; its last path segment is the canary
// searched for wherever the notifier writes.
constexpr const char* kCanary = "canary-secret";
constexpr const char* kWebhookPath = "/services/T0/B0/canary-secret";

// One message per second, measured at the fake between request arrivals.
// The slot is taken when the row is claimed, the request leaves a few
// milliseconds later (commit, connect; longer on a loaded machine), so two
// arrivals may be closer than the slot's second, but a burst's span cannot
// be shorter than one second per message by more than one such delay.
// Without the slot they are milliseconds apart.
constexpr milliseconds kMinGap{800};
constexpr milliseconds kSpanSlack{150};

Answer slack(int status, std::string body,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
  Answer a;
  a.status = status;
  a.body = std::move(body);
  a.headers = std::move(headers);
  a.headers.emplace_back("Content-Type", "text/plain");
  return a;
}

std::string text_of(const Received& r) {
  return std::string(json::parse(r.body).as_object().at("text").as_string());
}

long long gap_ms(const Received& earlier, const Received& later) {
  return duration_cast<milliseconds>(later.at - earlier.at).count();
}

class NotifierTest : public ::testing::Test {
 protected:
  NotifierTest() {
    fake_.set_default(kWebhookPath, slack(200, "ok"));
    config_.slack.webhook_url = Secret(fake_.base_url() + kWebhookPath);
    config_.slack.timeout = Millis{500};
    config_.retry.initial_backoff = Millis{50};
    config_.retry.max_backoff = Millis{200};
    config_.retry.max_attempts = 5;
  }

  // A due notification; `age_s` seconds overdue, so the claim order
  // (oldest first) is the test's to choose.
  void add(const std::string& id, const std::string& kind, const std::string& prospect_id,
           const std::string& payload = "{}", int age_s = 0) {
    auto c = db_.connect();
    pqxx::work tx(*c);
    tx.exec_params(
        "INSERT INTO notifications (id, kind, prospect_id, payload, next_attempt_at)"
        " VALUES ($1, $2, NULLIF($3, ''), $4::jsonb, now() - $5::int * interval '1 second')",
        id, kind, prospect_id, payload, age_s);
    tx.commit();
  }
  // "status|attempts" of one notification.
  std::string state(const std::string& id) const {
    return q("SELECT status || '|' || attempts FROM notifications WHERE id = '" + id + "'");
  }
  long long count(const std::string& where) const {
    return db_.count("SELECT count(*) FROM notifications WHERE " + where);
  }
  // Frees the shared slot and makes every waiting retry due now, for tests
  // that are not about timing.
  void make_due() const {
    q("WITH s AS (UPDATE api_slots SET next_at = '-infinity' WHERE api = 'slack' RETURNING 1)"
      " UPDATE notifications SET next_attempt_at = now() WHERE status IN ('pending', 'failed')"
      " RETURNING 1");
  }
  std::string q(const std::string& sql) const { return db_.scalar(sql); }

  Notifier& notifier() {
    if (!notifier_)
      notifier_ = std::make_unique<Notifier>(config_, db_.conninfo(), metrics_, "test-0");
    return *notifier_;
  }
  // One claim and send; true if something was claimed.
  bool send_one() {
    Result<bool> r = notifier().send_one();
    EXPECT_TRUE(r.is_ok()) << (r ? "" : r.status().message());
    return r && *r;
  }

  // Runs `instances` notifiers, each Notifier::run on a thread of its own,
  // until `done` holds or `timeout` passes; stops and joins them either way.
  bool run_until(int instances, const std::function<bool()>& done, milliseconds timeout) {
    std::vector<std::unique_ptr<Notifier>> notifiers;
    for (int i = 0; i < instances; ++i) {
      notifiers.push_back(std::make_unique<Notifier>(config_, db_.conninfo(), metrics_,
                                                     "instance-" + std::to_string(i)));
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (auto& n : notifiers) threads.emplace_back([&stop, n = n.get()] { n->run(stop); });
    const bool held = wait_until(done, timeout);
    stop.store(true);
    for (auto& t : threads) t.join();
    return held;
  }

  std::string metrics_text() const {
    prometheus::TextSerializer serializer;
    return serializer.Serialize(metrics_.registry()->Collect());
  }
  double requests_with(const std::string& code) const {
    return metric_sum(metrics_text(),
                      "crm_worker_external_requests_total{api=\"slack\",code=\"" + code + "\"");
  }
  double retries() const {
    return metric_sum(metrics_text(), "crm_worker_retries_total{api=\"slack\"");
  }

  std::vector<Received> ledger() const { return fake_.requests(kWebhookPath); }

  TestDatabase db_;
  FakeHttpServer fake_;
  Config config_;
  monitoring::Metrics metrics_{{}, {}};
  std::unique_ptr<Notifier> notifier_;
};

TEST_F(NotifierTest, TwoInstancesDeliverABurstExactlyOnceAtMostOnePerSecond) {
  constexpr int kBurst = 6;
  std::set<std::string> expected;
  for (int i = 0; i < kBurst; ++i) {
    const std::string id = "n" + std::to_string(i);
    add(id, "payment", id);
    expected.insert("Payment received from prospect [" + id + "].");
  }
  // 6 sends at one per second: about 5 s.
  ASSERT_TRUE(run_until(
      2, [&] { return count("status = 'sent'") == kBurst; }, milliseconds{12000}))
      << q("SELECT string_agg(id || ':' || status, ',') FROM notifications");

  const std::vector<Received> got = ledger();
  ASSERT_EQ(got.size(), static_cast<size_t>(kBurst)) << "a notification was sent twice";
  std::multiset<std::string> texts;
  for (const Received& r : got) texts.insert(text_of(r));
  EXPECT_EQ(std::set<std::string>(texts.begin(), texts.end()), expected);
  EXPECT_EQ(texts.size(), expected.size());
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_GE(gap_ms(got[i - 1], got[i]), kMinGap.count())
        << "between requests " << i - 1 << " and " << i;
  }
  ASSERT_FALSE(got.empty());
  EXPECT_GE(gap_ms(got.front(), got.back()),
            static_cast<long long>(got.size() - 1) * 1000 - kSpanSlack.count());
  EXPECT_EQ(count("attempts = 1 AND sent_at IS NOT NULL AND lease_owner IS NULL"), kBurst);
  EXPECT_EQ(requests_with("200"), kBurst);
  EXPECT_EQ(retries(), 0);
}

TEST_F(NotifierTest, RetryAfterHoldsEveryInstanceForEveryNotification) {
  // Two notifications due, two instances. The first request is throttled;
  // the other notification was due all along and must still wait out
  // Slack's Retry-After, whichever instance holds it. (Which one goes first
  // is not promised: an instance that loses the slot may have locked the
  // oldest row, so the other takes the next one.)
  add("n1", "payment", "p1", "{}", 10);
  add("n2", "payment", "p2", "{}", 5);
  fake_.script(kWebhookPath, {slack(429, "rate_limited", {{"Retry-After", "2"}})});

  ASSERT_TRUE(run_until(
      2, [&] { return count("status = 'sent'") == 2; }, milliseconds{8000}))
      << q("SELECT string_agg(id || ':' || status, ',') FROM notifications");

  const std::vector<Received> got = ledger();
  ASSERT_EQ(got.size(), 3u);
  const std::string throttled = text_of(got[0]);
  const bool p1_first = throttled == "Payment received from prospect [p1].";
  const std::string other =
      p1_first ? "Payment received from prospect [p2]." : "Payment received from prospect [p1].";
  // The hold is taken after the 429 was read, so nothing may arrive before
  // two full seconds (the rate limit alone would allow one second).
  EXPECT_GE(gap_ms(got[0], got[1]), 2000) << "the next request ignored Retry-After";
  EXPECT_GE(gap_ms(got[1], got[2]), kMinGap.count());
  const std::multiset<std::string> later = {text_of(got[1]), text_of(got[2])};
  EXPECT_EQ(later, (std::multiset<std::string>{throttled, other}))
      << "the throttled one delivered afterwards, the other one once";
  EXPECT_EQ(state(p1_first ? "n1" : "n2"), "sent|2");
  EXPECT_EQ(state(p1_first ? "n2" : "n1"), "sent|1");
  EXPECT_EQ(requests_with("429"), 1);
  EXPECT_EQ(requests_with("200"), 2);
  EXPECT_EQ(retries(), 1);
}

TEST_F(NotifierTest, ServerErrorsAreRetriedUntilDelivered) {
  add("n1", "payment", "p1");
  fake_.script(kWebhookPath, {slack(500, "internal_error"), slack(503, "service_unavailable")});

  ASSERT_TRUE(run_until(
      1, [&] { return count("status = 'sent'") == 1; }, milliseconds{6000}))
      << state("n1");

  EXPECT_EQ(ledger().size(), 3u);
  EXPECT_EQ(state("n1"), "sent|3");
  EXPECT_EQ(q("SELECT last_error IS NULL AND sent_at IS NOT NULL FROM notifications"), "t");
  EXPECT_EQ(requests_with("500"), 1);
  EXPECT_EQ(requests_with("503"), 1);
  EXPECT_EQ(requests_with("200"), 1);
  EXPECT_EQ(retries(), 2);
}

TEST_F(NotifierTest, TimeoutsAndDroppedConnectionsAreRetriedUntilDelivered) {
  add("n1", "payment", "p1");
  Answer slow = slack(200, "ok");
  slow.delay = milliseconds{2000};  // beyond slack.timeout (500 ms)
  Answer hang_up;
  hang_up.kind = Answer::Kind::kCloseWithoutAnswer;
  fake_.script(kWebhookPath, {slow, hang_up});

  ASSERT_TRUE(run_until(
      1, [&] { return count("status = 'sent'") == 1; }, milliseconds{8000}))
      << state("n1");

  EXPECT_EQ(ledger().size(), 3u);
  EXPECT_EQ(state("n1"), "sent|3");
  EXPECT_EQ(requests_with("timeout"), 1);
  EXPECT_EQ(requests_with("error"), 1);
  EXPECT_EQ(requests_with("200"), 1);
  EXPECT_EQ(retries(), 2);
}

TEST_F(NotifierTest, ARefusalThatWillNeverChangeIsDeadAtOnce) {
  add("n404", "payment", "p1", "{}", 10);
  add("n410", "payment", "p2", "{}", 5);
  fake_.script(kWebhookPath, {slack(404, "no_service"), slack(410, "channel_is_archived")});

  ASSERT_TRUE(send_one());
  make_due();
  ASSERT_TRUE(send_one());
  make_due();
  EXPECT_FALSE(send_one()) << "a dead notification was claimed again";

  EXPECT_EQ(ledger().size(), 2u);
  EXPECT_EQ(state("n404"), "dead|1");
  EXPECT_EQ(state("n410"), "dead|1");
  EXPECT_EQ(q("SELECT last_error FROM notifications WHERE id = 'n404'"), "Slack answered 404");
  EXPECT_EQ(q("SELECT last_error FROM notifications WHERE id = 'n410'"), "Slack answered 410");
  EXPECT_EQ(count("last_error LIKE '%" + std::string(kCanary) + "%'"), 0);
  EXPECT_EQ(retries(), 0);
}

TEST_F(NotifierTest, AlwaysFailingIsDeadAfterExactlyMaxAttempts) {
  config_.retry.max_attempts = 3;
  add("n1", "payment", "p1");
  fake_.set_default(kWebhookPath, slack(500, "internal_error"));

  // Three attempts, one second apart (the slot).
  ASSERT_TRUE(run_until(
      1, [&] { return count("status = 'dead'") == 1; }, milliseconds{6000}))
      << state("n1");
  make_due();
  EXPECT_FALSE(send_one()) << "a dead notification was claimed again";

  EXPECT_EQ(ledger().size(), 3u);
  EXPECT_EQ(state("n1"), "dead|3");
  EXPECT_EQ(q("SELECT last_error FROM notifications"), "Slack answered 500");
  // The first two failures were scheduled for another attempt, the third
  // was not: crm_worker_retries_total counts retries, not failures.
  EXPECT_EQ(retries(), 2);
  EXPECT_EQ(requests_with("500"), 3);
}

TEST_F(NotifierTest, ARowLeftSendingByACrashIsSentAgainAfterItsLease) {
  add("crashed", "payment", "p1");
  add("in_flight", "payment", "p2");
  // `crashed`: claimed by an instance that died, its lease over.
  // `in_flight`: another instance is sending it right now.
  q("UPDATE notifications SET status = 'sending', attempts = 1, lease_owner = 'dead-instance',"
    " lease_expires_at = now() - interval '1 second' WHERE id = 'crashed' RETURNING 1");
  q("UPDATE notifications SET status = 'sending', attempts = 1, lease_owner = 'live-instance',"
    " lease_expires_at = now() + interval '1 minute' WHERE id = 'in_flight' RETURNING 1");

  ASSERT_TRUE(send_one());
  make_due();
  EXPECT_FALSE(send_one()) << "a row whose lease still runs was taken from its owner";

  const std::vector<Received> got = ledger();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(text_of(got[0]), "Payment received from prospect [p1].");
  EXPECT_EQ(state("crashed"), "sent|2");
  EXPECT_EQ(state("in_flight"), "sending|1");
  EXPECT_EQ(q("SELECT lease_owner FROM notifications WHERE id = 'in_flight'"), "live-instance");

  // A crash during the last allowed attempt: dead, not an attempt too many.
  add("last", "payment", "p3");
  q("UPDATE notifications SET status = 'sending', attempts = " +
    std::to_string(config_.retry.max_attempts) +
    ", lease_owner = 'dead-instance', lease_expires_at = now() - interval '1 second'"
    " WHERE id = 'last' RETURNING 1");
  make_due();
  EXPECT_FALSE(send_one());
  EXPECT_EQ(state("last"), "dead|" + std::to_string(config_.retry.max_attempts));
  EXPECT_EQ(ledger().size(), 1u);
}

TEST_F(NotifierTest, MessagesSayWhatHappenedWithEventTextEscaped) {
  q("INSERT INTO prospects (id, name, company) VALUES"
    " ('p1', '<script>&', 'A&B <Ltd>'), ('p2', 'Ada', NULL) RETURNING 1");
  struct Case {
    std::string kind, prospect, payload, text;
  };
  const std::vector<Case> cases = {
      {"reply_received", "p1", "{}",
       "Reply received from &lt;script&gt;&amp; (A&amp;B &lt;Ltd&gt;) [p1]."},
      {"call_completed", "p2", "{}", "Call completed with Ada [p2]."},
      {"payment", "", "{}", "Payment received from prospect."},
      {"lead_score", "p2", R"({"threshold": 50})", "Ada [p2] reached lead score 50."},
      {"call_reminder", "p2", R"({"scheduled_at": "2026-03-02T10:00:00+00:00"})",
       "Reminder: call with Ada [p2] at 2026-03-02T10:00:00+00:00."},
      {"call_reminder", "p2", "{}", "Reminder: call with Ada [p2] soon."},
      {"stale_deal", "p1", R"({"deal_id": "d<1>&"})",
       "Deal d&lt;1&gt;&amp; with &lt;script&gt;&amp; (A&amp;B &lt;Ltd&gt;) [p1] "
       "has had no activity for a while."},
      {"stale_deal", "p2", "{}", "A deal with Ada [p2] has had no activity for a while."},
      // A prospect id from an event is not ours either.
      {"payment", "<p3>", "{}", "Payment received from prospect [&lt;p3&gt;]."},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.kind + " " + c.payload);
    add("n" + std::to_string(i), c.kind, c.prospect, c.payload);
    ASSERT_TRUE(send_one());
    make_due();
    const std::vector<Received> got = ledger();
    ASSERT_EQ(got.size(), i + 1);
    const Received& r = got.back();
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.headers.count("content-type") ? r.headers.at("content-type") : "",
              "application/json");
    const json::value body = json::parse(r.body);
    ASSERT_TRUE(body.is_object());
    EXPECT_EQ(body.as_object().size(), 1u) << r.body;
    EXPECT_EQ(text_of(r), c.text);
    EXPECT_EQ(r.body.find("<script>"), std::string::npos) << r.body;
  }
  EXPECT_EQ(count("status = 'sent'"), static_cast<long long>(cases.size()));
}

TEST_F(NotifierTest, TheWebhookUrlIsNeverWrittenAnywhere) {
  // Slack echoing the URL back (as a proxy or a 401 page might), a 5xx that
  // is retried, and a connection refused (the other error path: curl's own
  // text). Every line the notifier logs is captured, at debug level.
  config_.retry.max_attempts = 2;
  const std::string echo = "no such webhook: " + fake_.base_url() + kWebhookPath;
  fake_.script(kWebhookPath, {slack(401, echo), slack(500, echo), slack(500, echo)});
  add("n401", "payment", "p1", "{}", 10);
  add("n500", "payment", "p2", "{}", 5);

  const log::Level level = log::level();
  log::set_level(log::Level::kDebug);
  // No ASSERT until the capture ends: it would leave stderr captured.
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(send_one());  // 401: dead
  make_due();
  EXPECT_TRUE(send_one());  // 500: failed, retried
  make_due();
  EXPECT_TRUE(send_one());  // 500 again: dead (max_attempts = 2)
  {
    Config refused = config_;
    refused.slack.webhook_url =
        Secret("http://127.0.0.1:" + std::to_string(free_port()) + kWebhookPath);
    add("nrefused", "payment", "p3");
    make_due();
    Notifier other(refused, db_.conninfo(), metrics_, "test-refused");
    Result<bool> r = other.send_one();
    EXPECT_TRUE(r.is_ok() && *r);
  }
  const std::string logged = ::testing::internal::GetCapturedStderr();
  log::set_level(level);

  // The searches below must have something to search.
  ASSERT_EQ(state("n401"), "dead|1");
  ASSERT_EQ(state("n500"), "dead|2");
  ASSERT_EQ(state("nrefused"), "failed|1");
  EXPECT_NE(q("SELECT last_error FROM notifications WHERE id = 'nrefused'"), "");
  EXPECT_NE(logged.find("Slack notification refused"), std::string::npos) << logged;
  EXPECT_NE(logged.find("will retry"), std::string::npos) << logged;
  EXPECT_NE(logged.find("out of attempts"), std::string::npos) << logged;
  EXPECT_EQ(retries(), 2) << "n500's first attempt and the refused connection";
  EXPECT_EQ(ledger().size(), 3u);

  EXPECT_EQ(logged.find(kCanary), std::string::npos) << logged;
  EXPECT_EQ(db_.count("SELECT count(*) FROM notifications n WHERE n::text LIKE '%" +
                      std::string(kCanary) + "%'"),
            0)
      << q("SELECT string_agg(n::text, E'\\n') FROM notifications n");
  EXPECT_EQ(db_.count("SELECT count(*) FROM api_slots s WHERE s::text LIKE '%" +
                      std::string(kCanary) + "%'"),
            0);
  const std::string metrics = metrics_text();
  EXPECT_NE(metrics.find("crm_worker_external_requests_total"), std::string::npos);
  EXPECT_EQ(metrics.find(kCanary), std::string::npos);
  EXPECT_EQ(metrics.find("/services/"), std::string::npos);
}

}  // namespace
}  // namespace crm::test
