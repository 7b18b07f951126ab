// What each outreach event does to the CRM's tables (SPEC.md §4), against
// the real PostgreSQL: one scenario per rule, each applied in the order that
// breaks naive code (the late event first), then the whole pipeline through
// the dev broker with kill -9 in the middle.

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <random>
#include <thread>
#include <atomic>

#include "daemon/applier.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {
namespace {

class OutreachTest : public ::testing::Test {
 protected:
  TestDatabase db_;
  db::Database conn_{db_.conninfo()};
  db::ProjectionOptions options_ = [] {
    Config c;
    c.slack.webhook_url = Secret("https://hooks.slack.invalid/T/B/x");
    return db::projection_options(c);
  }();
  int next_ = 0;

  HistoryEvent ev(const std::string& type, const std::string& time, const std::string& data) {
    return cloud_event("e" + std::to_string(next_++), type, time, data);
  }
  HistoryEvent sendgrid(const std::string& element) {
    HistoryEvent e;
    e.topic = "sendgrid.events";
    e.value = "[" + element + "]";
    return e;
  }
  // Applies the events one batch each, in the order given.
  void apply(const std::vector<HistoryEvent>& events) {
    Status s = apply_events(conn_, events, 1, options_);
    ASSERT_TRUE(s.is_ok()) << s.reason() << ": " << s.message();
  }
  std::string q(const std::string& sql) const { return db_.scalar(sql); }
  long long n(const std::string& sql) const { return db_.count(sql); }
};

TEST_F(OutreachTest, EmailLifecycleCountsDistinctEngagementAndCancelsFollowupsOnReply) {
  const std::string e = R"("email_id":"m1","prospect_id":"p1")";
  apply({ev("crm.prospect.discovered", at_hour(1), R"({"prospect_id":"p1","name":"Ada"})"),
         ev("crm.email.sent", at_hour(2), "{" + e + R"(,"template":"intro","subject":"Hi","provider_message_id":"x1"})"),
         ev("crm.email.opened", at_hour(3), "{" + e + R"(,"machine_open":true})"),
         ev("crm.email.opened", at_hour(5), "{" + e + "}"),
         ev("crm.email.opened", at_hour(4), "{" + e + "}"),
         ev("crm.email.delivered", at_hour(2, 30), "{" + e + "}"),
         ev("crm.email.clicked", at_hour(6), "{" + e + R"(,"url":"https://x"})"),
         ev("crm.email.clicked", at_hour(7), "{" + e + "}"),
         ev("crm.email.replied", at_hour(8), "{" + e + R"(,"reply_text":"Yes"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', status, status_rank, open_count, machine_open_count, click_count, reply_text)"
              " FROM email_activities WHERE id = 'm1'"),
            "replied|5|2|1|2|Yes");
  // First human open, not the machine's.
  EXPECT_EQ(q("SELECT opened_at = '" + at_hour(4) + "' AND machine_opened_at = '" + at_hour(3) + "' FROM email_activities"), "t");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, email_status, emails_sent_count, emails_opened_count,"
              " emails_clicked_count, emails_replied_count, lead_score) FROM prospects WHERE id = 'p1'"),
            "replied|replied|1|1|1|1|45");
  EXPECT_EQ(q("SELECT last_contact_at = '" + at_hour(8) + "' FROM prospects"), "t");
  // The sequence's first step was scheduled from the send (the next one
  // waits for it to fire) and cancelled by the reply.
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, cancel_reason, due_at = '" + at_hour(2) +
              "'::timestamptz + interval '3 days'), ',' ORDER BY id) FROM followups"),
            "m1:followup:1|cancelled|replied|t");
  EXPECT_EQ(q("SELECT string_agg(stage, ',' ORDER BY stage_date) FROM pipeline_stages"), "discovered,contacted,replied");
  EXPECT_EQ(n("SELECT count(*) FROM notifications WHERE kind = 'reply_received' AND prospect_id = 'p1'"), 1);
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities"), 9);
}

TEST_F(OutreachTest, BouncedBeforeSentIsTerminalAndSuppresses) {
  const std::string e = R"("email_id":"m1","prospect_id":"p1")";
  apply({ev("crm.email.bounced", at_hour(3), "{" + e + R"(,"reason":"550 no such user"})"),
         ev("crm.email.opened", at_hour(4), "{" + e + "}"),  // after the bounce: status stays
         ev("crm.email.sent", at_hour(2), "{" + e + "}")});
  EXPECT_EQ(q("SELECT concat_ws('|', status, bounce_reason) FROM email_activities"), "bounced|550 no such user");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, email_suppressed_reason, email_suppressed_at = '" + at_hour(3) +
              "') FROM prospects"),
            "contacted|bounced|t");
  EXPECT_EQ(q("SELECT string_agg(DISTINCT status || ':' || cancel_reason, ',') FROM followups"), "cancelled:bounced");
  EXPECT_EQ(q("SELECT next_follow_up_at IS NULL FROM prospects"), "t");
}

TEST_F(OutreachTest, OpenedBeforeDeliveredAndDroppedAndUnsubscribed) {
  apply({ev("crm.email.opened", at_hour(3), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.email.delivered", at_hour(2), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.email.dropped", at_hour(5), R"({"email_id":"m2","prospect_id":"p2","reason":"Bounced Address"})"),
         ev("crm.email.unsubscribed", at_hour(6), R"({"email_id":"m3","prospect_id":"p3"})"),
         ev("crm.email.spam_reported", at_hour(5), R"({"email_id":"m3","prospect_id":"p3"})")});
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status), ',' ORDER BY id) FROM email_activities"),
            "m1|opened,m2|failed,m3");
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, email_status, email_suppressed_reason), ',' ORDER BY id)"
              " FROM prospects"),
            "p1|opened,p2|none|dropped,p3|none|spam_reported");
}

TEST_F(OutreachTest, SendgridEventsFindTheirEmailByMessageIdEvenBeforeTheSend) {
  // No custom args: only the message id names the email, and it arrives
  // before the crm.email.sent that carries that id.
  apply({sendgrid(R"({"email":"a@x","timestamp":1772362800,"event":"open","sg_event_id":"sg1",)"
                  R"("sg_message_id":"XM1.filterdrecv-1"})"),
         sendgrid(R"({"email":"a@x","timestamp":1772362801,"event":"open","sg_event_id":"sg2",)"
                  R"("sg_message_id":"XM1.filterdrecv-2","sg_machine_open":true})"),
         sendgrid(R"({"email":"a@x","timestamp":1772362802,"event":"processed","sg_event_id":"sg3",)"
                  R"("sg_message_id":"XM1.filterdrecv-3"})")});
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE entity_id IS NULL"), 3);
  EXPECT_EQ(n("SELECT count(*) FROM email_activities"), 0);
  apply({ev("crm.email.sent", at_hour(1), R"({"email_id":"m1","prospect_id":"p1","provider_message_id":"XM1"})"),
         // The same email with custom args: the id wins over the message id.
         sendgrid(R"({"email":"a@x","timestamp":1772366400,"event":"click","sg_event_id":"sg4",)"
                  R"("sg_message_id":"XM1.f","email_id":"m1","prospect_id":"p1","url":"https://x"})")});
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE entity_id = 'm1' AND prospect_id = 'p1'"), 5);
  EXPECT_EQ(q("SELECT concat_ws('|', status, open_count, machine_open_count, click_count) FROM email_activities"),
            "clicked|1|1|1");
  EXPECT_EQ(q("SELECT concat_ws('|', emails_opened_count, emails_clicked_count, email_status) FROM prospects"),
            "1|1|clicked");
  // sg_event_id is the event id: SendGrid's duplicate delivery adds nothing.
  apply({sendgrid(R"({"email":"a@x","timestamp":1772362800,"event":"open","sg_event_id":"sg1",)"
                  R"("sg_message_id":"XM1.filterdrecv-1"})")});
  EXPECT_EQ(q("SELECT open_count FROM email_activities"), "1");
}

TEST_F(OutreachTest, AReplyBeforeTheSendDoesNotCancelItsSequence) {
  apply({ev("crm.sms.replied", at_hour(1), R"({"sms_id":"s1","prospect_id":"p1","body":"hi"})"),
         ev("crm.email.sent", at_hour(2), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.email.sent", at_hour(3), R"({"email_id":"m2","prospect_id":"p1","sequence_step":1})")});
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM followups"),
            "m1:followup:1:scheduled");
  EXPECT_EQ(q("SELECT next_follow_up_at = '" + at_hour(2) + "'::timestamptz + interval '3 days' FROM prospects"), "t");
  // A reply to the email itself cancels, whatever its timestamp says.
  apply({ev("crm.email.replied", at_hour(1, 30), R"({"email_id":"m1"})")});
  EXPECT_EQ(q("SELECT string_agg(DISTINCT status || ':' || cancel_reason, ',') FROM followups"), "cancelled:replied");
}

TEST_F(OutreachTest, SmsStatusesMoveForwardAndFailuresAreTerminal) {
  apply({ev("crm.sms.status", at_hour(3), R"({"sms_id":"s1","prospect_id":"p1","status":"delivered"})"),
         ev("crm.sms.status", at_hour(1), R"({"sms_id":"s1","prospect_id":"p1","status":"queued"})"),
         ev("crm.sms.status", at_hour(2), R"({"sms_id":"s1","prospect_id":"p1","status":"sent"})"),
         ev("crm.sms.status", at_hour(5), R"({"sms_id":"s2","prospect_id":"p1","status":"delivered"})"),
         ev("crm.sms.status", at_hour(4), R"({"sms_id":"s2","prospect_id":"p1","status":"failed"})")});
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, status_rank), ',' ORDER BY id) FROM sms_activities"),
            "s1|delivered|3,s2|failed|4");
  EXPECT_EQ(q("SELECT status_at = '" + at_hour(3) + "' FROM sms_activities WHERE id = 's1'"), "t");
  apply({ev("crm.sms.replied", at_hour(6), R"({"sms_id":"s1","prospect_id":"p1","body":"Call me"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', body, status) FROM sms_activities WHERE id = 's1'"), "Call me|delivered");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, sms_replied_count, lead_score) FROM prospects"), "replied|1|30");
  EXPECT_EQ(n("SELECT count(*) FROM notifications WHERE kind = 'reply_received'"), 1);
}

TEST_F(OutreachTest, CallsScheduleRemindersReschedulesAndCompletions) {
  apply({ev("crm.call.scheduled", at_hour(1), R"({"call_id":"c1","prospect_id":"p1","scheduled_at":")" + at_hour(30) + R"("})")});
  EXPECT_EQ(q("SELECT concat_ws('|', kind, status, due_at = '" + at_hour(30) + "'::timestamptz - interval '15 minutes')"
              " FROM followups"),
            "call_reminder|scheduled|t");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, calls_scheduled_count, next_follow_up_at = '" + at_hour(30) +
              "') FROM prospects"),
            "scheduled|1|t");
  // An older schedule arriving late does not undo the newer one.
  apply({ev("crm.call.scheduled", at_hour(3), R"({"call_id":"c1","prospect_id":"p1","scheduled_at":")" + at_hour(40) + R"("})"),
         ev("crm.call.scheduled", at_hour(2), R"({"call_id":"c1","prospect_id":"p1","scheduled_at":")" + at_hour(35) + R"("})")});
  EXPECT_EQ(q("SELECT scheduled_at = '" + at_hour(40) + "' FROM call_activities"), "t");
  EXPECT_EQ(q("SELECT due_at = '" + at_hour(40) + "'::timestamptz - interval '15 minutes' FROM followups"), "t");
  apply({ev("crm.call.completed", at_hour(41),
            R"({"call_id":"c1","prospect_id":"p1","completed_at":")" + at_hour(41) +
                R"(","duration_s":600,"notes":"good","objections":["price","timing"],"next_steps":"send","outcome":"proposal_sent"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', status, duration_s, notes, objections::text, next_steps, outcome)"
              " FROM call_activities"),
            "completed|600|good|{price,timing}|send|proposal_sent");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, calls_completed_count, next_follow_up_at IS NULL, lead_score)"
              " FROM prospects"),
            "proposal|1|t|45");
  EXPECT_EQ(q("SELECT status || ':' || cancel_reason FROM followups"), "cancelled:call_completed");
  EXPECT_EQ(n("SELECT count(*) FROM notifications WHERE kind = 'call_completed'"), 1);
  EXPECT_EQ(q("SELECT string_agg(stage, ',' ORDER BY stage_date) FROM pipeline_stages"), "discovered,scheduled,proposal");
}

TEST_F(OutreachTest, DealStageIsTheNewestAndAClosedProspectStaysClosed) {
  apply({ev("crm.deal.stage_changed", at_hour(5), R"({"deal_id":"d1","prospect_id":"p1","stage":"closed_lost","amount":900})"),
         ev("crm.deal.stage_changed", at_hour(3), R"({"deal_id":"d1","stage":"negotiation","amount":"1200.50"})"),
         ev("crm.deal.stage_changed", at_hour(7), R"({"deal_id":"d1","stage":"qualification"})"),
         ev("crm.email.sent", at_hour(6), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.payment.completed", at_hour(8),
            R"({"payment_id":"pay1","prospect_id":"p1","amount":49,"currency":"EUR","plan":"pro"})")});
  // The newest stage wins; the newest amount stated wins.
  EXPECT_EQ(q("SELECT concat_ws('|', stage, amount, prospect_id, stage_changed_at = '" + at_hour(7) + "') FROM deals"),
            "qualification|900|p1|t");
  // closed_lost came first in time: terminal, the payment does not reopen it.
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, deal_value) FROM prospects"), "closed_lost|900");
  EXPECT_EQ(q("SELECT string_agg(stage, ',' ORDER BY stage_date) FROM pipeline_stages"), "discovered,closed_lost");
  // The email sent after the close (a human's choice) keeps its sequence
  // until the later payment, which closes what was scheduled before it.
  EXPECT_EQ(q("SELECT string_agg(DISTINCT status || ':' || cancel_reason, ',') FROM followups"
              " WHERE kind = 'email'"),
            "cancelled:closed_won");
  // The deal's stale alert ends with the deal's own close, whenever it was.
  EXPECT_EQ(q("SELECT concat_ws('|', id, status, cancel_reason) FROM followups WHERE kind = 'stale_deal'"),
            "d1:stale|cancelled|closed_lost");
  // The event without a prospect took the deal's.
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE entity_id = 'd1' AND prospect_id = 'p1'"), 3);
}

TEST_F(OutreachTest, ADealEventWithoutProspectUsesTheProspectTheWebAppWrote) {
  db_.scalar("INSERT INTO deals (id, prospect_id, name) VALUES ('d9', 'p9', 'Big one') RETURNING id");
  apply({ev("crm.email.sent", at_hour(1), R"({"email_id":"m9","prospect_id":"p9"})"),
         ev("crm.deal.stage_changed", at_hour(2), R"({"deal_id":"d9","stage":"closed_won","amount":5000})")});
  EXPECT_EQ(q("SELECT concat_ws('|', name, stage, prospect_id) FROM deals"), "Big one|closed_won|p9");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, deal_value) FROM prospects WHERE id = 'p9'"), "closed_won|5000");
  EXPECT_EQ(q("SELECT string_agg(DISTINCT status || ':' || cancel_reason, ',') FROM followups"), "cancelled:closed_won");
}

TEST_F(OutreachTest, FollowupsScheduledAfterAPaymentOrTakenByAnExecutorAreLeftAlone) {
  apply({ev("crm.payment.completed", at_hour(1), R"({"payment_id":"x","prospect_id":"p1","amount":1,"currency":"EUR"})"),
         ev("crm.call.scheduled", at_hour(2), R"({"call_id":"onboarding","prospect_id":"p1","scheduled_at":")" + at_hour(50) + R"("})"),
         ev("crm.email.sent", at_hour(3), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.followup.scheduled", at_hour(3),
            R"({"followup_id":"nudge","prospect_id":"p1","kind":"email","due_at":")" + at_hour(60) + R"("})")});
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM followups"),
            "m1:followup:1:scheduled,nudge:scheduled,onboarding:reminder:scheduled");
  // An executor took one follow-up; a reply must not touch it.
  db_.scalar("UPDATE followups SET status = 'sending' WHERE id = 'm1:followup:1' RETURNING id");
  apply({ev("crm.email.replied", at_hour(4), R"({"email_id":"m1","prospect_id":"p1"})")});
  EXPECT_EQ(q("SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM followups"),
            "m1:followup:1:sending,nudge:cancelled,onboarding:reminder:scheduled");
}

TEST_F(OutreachTest, SyncRequestsBecomeOneJobPerEntityCarryingTheNewestRequest) {
  auto req = [&](const std::string& time, const std::string& type, const std::string& id,
                 const std::string& op) {
    return ev("crm.sync.requested", time,
              R"({"entity_type":")" + type + R"(","entity_id":")" + id + R"(","operation":")" + op + "\"}");
  };
  const std::string jobs =
      "SELECT string_agg(concat_ws('|', entity_type, entity_id, operation, status), ',' ORDER BY id)"
      " FROM sync_queue";
  // Ten requests before the sync: one job. The newest arrived first; the
  // older ones change nothing.
  std::vector<HistoryEvent> burst;
  burst.push_back(req(at_hour(10), "company", "co1", "upsert"));
  for (int i = 0; i < 9; ++i) burst.push_back(req(at_hour(i), "company", "co1", i % 2 ? "delete" : "upsert"));
  burst.push_back(req(at_hour(3), "deal", "co1", "delete"));  // same id, another type
  apply(burst);
  EXPECT_EQ(q(jobs), "company|co1|upsert|pending,deal|co1|delete|pending");
  EXPECT_EQ(q("SELECT requested_at = '" + at_hour(10) + "' FROM sync_queue WHERE entity_type = 'company'"), "t");

  // A worker took the job: a newer request makes a new pending job, an
  // older one (an upsert that would undo a newer delete) adds nothing.
  q("UPDATE sync_queue SET status = 'in_progress' WHERE entity_type = 'company' RETURNING 1");
  apply({req(at_hour(11), "company", "co1", "delete"), req(at_hour(9, 30), "company", "co1", "upsert")});
  EXPECT_EQ(q(jobs), "company|co1|upsert|in_progress,deal|co1|delete|pending,company|co1|delete|pending");
  q("UPDATE sync_queue SET status = 'completed' WHERE status = 'in_progress' RETURNING 1");
  apply({req(at_hour(10, 30), "company", "co1", "upsert")});
  EXPECT_EQ(n("SELECT count(*) FROM sync_queue WHERE entity_type = 'company'"), 2);
  EXPECT_EQ(q("SELECT operation FROM sync_queue WHERE entity_type = 'company' AND status = 'pending'"), "delete");
}

TEST_F(OutreachTest, TurningNotificationsOnDoesNotReplayHistory) {
  options_ = db::projection_options(Config{});
  apply({ev("crm.email.replied", at_hour(1), R"({"email_id":"m1","prospect_id":"p1"})")});
  Config on;
  on.slack.webhook_url = Secret("https://hooks.slack.invalid/T/B/x");
  options_ = db::projection_options(on);
  apply({ev("crm.email.opened", at_hour(2), R"({"email_id":"m1","prospect_id":"p1"})")});
  EXPECT_EQ(n("SELECT count(*) FROM notifications"), 0);
  // A reply naming only its email is queued, and gets its prospect once the
  // email's send is known.
  apply({ev("crm.email.replied", at_hour(5), R"({"email_id":"m2"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', kind, prospect_id IS NULL) FROM notifications"), "reply_received|t");
  apply({ev("crm.email.sent", at_hour(4), R"({"email_id":"m2","prospect_id":"p2"})")});
  EXPECT_EQ(q("SELECT prospect_id FROM notifications"), "p2");
  EXPECT_EQ(q("SELECT concat_ws('|', sales_status, emails_replied_count) FROM prospects WHERE id = 'p2'"), "replied|1");
}

TEST_F(OutreachTest, PaymentsCreateOneCustomerAndCancellationsChurn) {
  const std::string pay = R"("prospect_id":"p1","amount":"49.90","currency":"EUR")";
  apply({ev("crm.payment.completed", at_hour(5), R"({"payment_id":"pay2",)" + pay + R"(,"plan":"pro"})"),
         ev("crm.payment.completed", at_hour(2), R"({"payment_id":"pay1",)" + pay + R"(,"plan":"pro"})")});
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, amount, currency, plan, first_payment_id), ',') FROM customers"),
            "p1|active|49.90|EUR|pro|pay1");
  EXPECT_EQ(q("SELECT string_agg(concat_ws('|', id, status, started_at = '" + at_hour(2) + "'), ',') FROM subscriptions"),
            "p1:pro|active|t");
  EXPECT_EQ(q("SELECT sales_status FROM prospects"), "closed_won");
  EXPECT_EQ(n("SELECT count(*) FROM notifications WHERE kind = 'payment'"), 2);
  apply({ev("crm.subscription.cancelled", at_hour(6), R"({"prospect_id":"p1"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', status, churned_at = '" + at_hour(6) + "') FROM customers"), "churned|t");
  EXPECT_EQ(q("SELECT status FROM subscriptions"), "cancelled");
  // Paying again after the cancellation makes the customer active again.
  apply({ev("crm.payment.completed", at_hour(9), R"({"payment_id":"pay3",)" + pay + R"(,"plan":"pro"})")});
  EXPECT_EQ(q("SELECT concat_ws('|', status, churned_at) FROM customers"), "active");
  EXPECT_EQ(n("SELECT count(*) FROM customers"), 1);
  // A cancellation for a prospect who never paid leaves a churned stub.
  apply({ev("crm.subscription.cancelled", at_hour(9), R"({"prospect_id":"p2"})")});
  EXPECT_EQ(q("SELECT status FROM customers WHERE id = 'p2'"), "churned");
}

TEST_F(OutreachTest, CrossingTheScoreThresholdNotifiesOnce) {
  // Default weights: replied 30, call scheduled 20, call completed 25; the
  // default threshold is 60.
  apply({ev("crm.email.replied", at_hour(1), R"({"email_id":"m1","prospect_id":"p1"})"),
         ev("crm.call.scheduled", at_hour(2), R"({"call_id":"c1","prospect_id":"p1","scheduled_at":")" + at_hour(9) + R"("})")});
  EXPECT_EQ(q("SELECT lead_score FROM prospects"), "50");
  EXPECT_EQ(n("SELECT count(*) FROM notifications WHERE kind = 'lead_score'"), 0);
  apply({ev("crm.call.completed", at_hour(9), R"({"call_id":"c1","prospect_id":"p1","completed_at":")" + at_hour(9) + R"("})"),
         ev("crm.email.replied", at_hour(10), R"({"email_id":"m2","prospect_id":"p1"})")});
  EXPECT_EQ(q("SELECT lead_score FROM prospects"), "105");
  EXPECT_EQ(q("SELECT string_agg(id || ':' || (payload->>'threshold'), ',') FROM notifications WHERE kind = 'lead_score'"),
            "lead_score:p1:60");
}

TEST_F(OutreachTest, NotificationsOffWithoutASlackWebhook) {
  options_ = db::projection_options(Config{});
  apply({ev("crm.email.replied", at_hour(1), R"({"email_id":"m1","prospect_id":"p1"})")});
  EXPECT_EQ(n("SELECT count(*) FROM notifications"), 0);
  EXPECT_EQ(q("SELECT sales_status FROM prospects"), "replied");
}

// A value the contract lets through but PostgreSQL refuses (here: a
// trigger standing in for any constraint) dead-letters only that event;
// the rest of its batch applies.
TEST_F(OutreachTest, AnEventTheDatabaseRefusesIsIsolatedFromItsBatch) {
  {
    auto c = db_.connect();
    pqxx::work tx(*c);
    tx.exec0("CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
             " BEGIN IF NEW.id = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$");
    tx.exec0("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON deals FOR EACH ROW EXECUTE FUNCTION refuse_poison()");
    tx.commit();
  }
  std::vector<WorkItem> items;
  std::vector<HistoryEvent> events = {
      ev("crm.deal.stage_changed", at_hour(1), R"({"deal_id":"d1","prospect_id":"p1","stage":"won"})"),
      ev("crm.deal.stage_changed", at_hour(2), R"({"deal_id":"poison","prospect_id":"p1","stage":"x"})"),
      ev("crm.email.sent", at_hour(3), R"({"email_id":"m1","prospect_id":"p2"})")};
  for (size_t i = 0; i < events.size(); ++i) items.push_back(work_item(events[i], static_cast<long long>(i)));
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_batch(conn_, items, options_, &results).is_ok());
  EXPECT_EQ(results[0].outcome, Outcome::kApplied);
  EXPECT_EQ(results[1].outcome, Outcome::kDeadLetter);
  EXPECT_EQ(results[1].reason, "db_rejected");
  EXPECT_EQ(results[2].outcome, Outcome::kApplied);
  EXPECT_EQ(n("SELECT count(*) FROM deals"), 1);
  EXPECT_EQ(n("SELECT count(*) FROM processed_events"), 2);
  EXPECT_EQ(n("SELECT count(*) FROM outreach_activities WHERE entity_id = 'poison'"), 0);
  EXPECT_EQ(q("SELECT reason FROM dead_letters"), "db_rejected");
  EXPECT_EQ(q("SELECT emails_sent_count FROM prospects WHERE id = 'p2'"), "1");
}

TEST_F(OutreachTest, ContractViolationsAreDeadLettersWithTheirReason) {
  std::vector<HistoryEvent> events = {
      ev("crm.email.sent", at_hour(1), R"({"email_id":"m1"})"),
      ev("crm.sms.status", at_hour(1), R"({"sms_id":"s1","prospect_id":"p1","status":"teleported"})"),
      ev("crm.call.scheduled", at_hour(1), R"({"call_id":"c1","prospect_id":"p1","scheduled_at":"tomorrow"})"),
      ev("crm.payment.completed", at_hour(1), R"({"payment_id":"x","prospect_id":"p1","amount":"lots","currency":"EUR"})"),
      ev("crm.email.teleported", at_hour(1), R"({"email_id":"m1"})")};
  std::vector<WorkItem> items;
  for (size_t i = 0; i < events.size(); ++i) items.push_back(work_item(events[i], static_cast<long long>(i)));
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_batch(conn_, items, options_, &results).is_ok());
  std::vector<std::string> reasons;
  for (const auto& r : results) reasons.push_back(r.reason);
  EXPECT_EQ(reasons, (std::vector<std::string>{"missing_field", "bad_value", "bad_time", "bad_value", "unknown_type"}));
  EXPECT_EQ(n("SELECT count(*) FROM dead_letters"), 5);
  EXPECT_EQ(n("SELECT count(*) FROM processed_events"), 0);
  EXPECT_EQ(n("SELECT count(*) FROM prospects"), 0);
}

// Guarantee: a crm.followup.cancelled that names only the follow-up, applied
// by one worker while another is creating that follow-up (its email's
// send, not committed yet), still cancels it and leaves the prospect's
// next_follow_up_at without it. Neither transaction can see the other's
// uncommitted rows, so they must queue on the follow-up's id: found by the
// "connections killed every 2 s" scenario, where two workers hit this
// window.
TEST_F(OutreachTest, ACancelRacingTheSendThatCreatesItsFollowupStillCancelsIt) {
  apply({ev("crm.prospect.discovered", at_hour(1), R"({"prospect_id":"p1","name":"Ada"})")});
  const HistoryEvent sent = ev("crm.email.sent", at_hour(3),
                               R"({"email_id":"p1-e0","prospect_id":"p1","provider_message_id":"m-1","template":"intro-1"})");
  const HistoryEvent cancel = ev("crm.followup.cancelled", at_hour(2), R"({"followup_id":"p1-e0:followup:1"})");

  auto send_conn = db_.connect();
  pqxx::work send_tx(*send_conn);
  std::vector<ItemResult> results;
  ASSERT_TRUE(apply_items(send_tx, {work_item(sent, 1)}, options_, &results).is_ok());
  ASSERT_EQ(q("SELECT count(*) FROM followups"), "0");  // not committed yet

  std::atomic<bool> cancel_done{false};
  std::thread canceller([&] {
    auto conn = db_.connect();
    pqxx::work tx(*conn);
    std::vector<ItemResult> r;
    EXPECT_TRUE(apply_items(tx, {work_item(cancel, 2)}, options_, &r).is_ok());
    tx.commit();
    cancel_done = true;
  });
  // The cancel must queue behind the send's transaction: it is seen waiting
  // on an advisory lock, not finished.
  const bool waiting = wait_until([&] {
    return cancel_done || n("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'") > 0;
  }, 10s);
  EXPECT_TRUE(waiting);
  EXPECT_FALSE(cancel_done) << "the cancel committed while the send that creates its follow-up was open";
  send_tx.commit();
  canceller.join();

  EXPECT_EQ(q("SELECT status FROM followups WHERE id = 'p1-e0:followup:1'"), "cancelled");
  EXPECT_EQ(q("SELECT next_follow_up_at IS NOT DISTINCT FROM crm_next_follow_up(id) FROM prospects WHERE id = 'p1'"),
            "t");
  EXPECT_EQ(n("SELECT count(*) FROM prospects WHERE next_follow_up_at IS NOT NULL AND id = 'p1' AND "
              "next_follow_up_at = (SELECT due_at FROM followups WHERE id = 'p1-e0:followup:1')"),
            0);
}

// The invariant end to end: a seeded mixed history, shuffled with
// duplicates, through the dev broker on both topics, with the worker killed
// (-9) before a commit, after a commit and at random, ends in exactly the
// tables of the distinct events applied once in time order.
TEST(OutreachPipeline, KillNineInTheMiddleStillGivesTheOneFinalState) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::printf("pipeline seed %u\n", seed);
  const HistoryShape shape{.prospects = 6};
  std::vector<HistoryEvent> events = outreach_history(seed, shape);

  // The executors would fire the reminders and send the outbox, which the
  // reference (the events alone) does not do: this test is about the events.
  const std::string config =
      "[consumer]\nbatch_max_events = 7\n[lead_score]\nthreshold = 40\n[executors]\nenabled = false\n";
  Config reference_config;
  reference_config.slack.webhook_url = Secret("http://127.0.0.1:9/x");
  reference_config.lead_score.threshold = 40;
  std::string reference;
  {
    TestDatabase ref;
    seed_web_app_rows(ref, shape);
    db::Database conn(ref.conninfo());
    ASSERT_TRUE(apply_events(conn, in_time_order(events), 1, db::projection_options(reference_config)).is_ok());
    reference = outreach_tables(ref);
  }

  TestDatabase db;
  seed_web_app_rows(db, shape);
  DevBrokerProcess broker(1, 3);
  Producer producer(broker.bootstrap());
  std::mt19937 rng(seed);
  std::vector<HistoryEvent> shuffled = events;
  for (int d = 0; d < 20; ++d) shuffled.push_back(events[rng() % events.size()]);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  for (const HistoryEvent& e : shuffled) ASSERT_GE(producer.send(e.topic, e.key, e.value), 0);

  const std::map<std::string, std::string> env = {{"CRM_WORKER_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/x"}};
  auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(env.begin(), env.end());
    return extra;
  };
  for (const char* point : {"before_db_commit", "after_db_commit"}) {
    WorkerProcess crashing(db, broker.bootstrap(),
                           with({{"CRM_WORKER_CRASH_AT", point}, {"CRM_WORKER_CRASH_AFTER", "3"}}), config);
    auto code = crashing.process().wait(60s);
    ASSERT_TRUE(code.has_value()) << crashing.process().log();
    EXPECT_EQ(*code, 128 + SIGKILL) << point;
  }
  {
    // And once at a moment nobody chose.
    WorkerProcess worker(db, broker.bootstrap(), with({}), config);
    wait_until([&] { return db.count("SELECT count(*) FROM processed_events") >= static_cast<long long>(events.size() / 2); }, 30s);
    worker.process().signal(SIGKILL);
    worker.process().wait(10s);
  }
  WorkerProcess worker(db, broker.bootstrap(), with({}), config);
  ASSERT_TRUE(wait_until([&] {
    return db.count("SELECT count(*) FROM processed_events") == static_cast<long long>(events.size());
  }, 90s)) << worker.process().log();
  // The whole topic is consumed (duplicates included) before comparing.
  ASSERT_TRUE(wait_until([&] {
    std::string m = worker.http_get("/metrics").second;
    return metric_sum(m, "crm_worker_kafka_consumer_lag") == 0 && outreach_tables(db) == reference;
  }, 30s)) << worker.process().log();
  EXPECT_EQ(outreach_tables(db), reference);
  EXPECT_EQ(db.count("SELECT count(*) FROM dead_letters"), 0);
}

}  // namespace
}  // namespace crm::test
