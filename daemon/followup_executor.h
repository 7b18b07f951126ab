#pragma once
// The follow-up executor: fires due timers, once, on time (SPEC.md §5, §6).
//
// Runs on a thread of its own with its own database connection, so a slow
// SendGrid never holds up the consumption of Kafka. Any number of instances
// share the timers: claims use FOR UPDATE SKIP LOCKED (db/followups.h).
//
// Time: due times are compared with the DATABASE's clock. The executor
// sleeps until the earliest due time and LISTENs on crm_followups (a
// trigger notifies when a timer is created or moved earlier), so a timer
// fires within moments of its due time without polling the table. Timers
// that came due while every worker was down fire once, late, when one
// returns; crm_worker_followups_overdue_seconds shows how late.
//
// Emails, at most one per follow-up, always:
//   1. claim ONE email: the row is `sending` in a COMMITTED transaction,
//      its lease covering one request (sendgrid.timeout) and its recording;
//   2. POST /v3/mail/send with custom args prospect_id, email_id (the
//      follow-up's id) and followup_id;
//   3. on 202, in one transaction: the row `sent` with SendGrid's
//      X-Message-Id, and a crm.email.sent fact on the timeline (so the email
//      has its email_activities row, counts as sent, and schedules the next
//      step of the sequence through the same projection as any email).
// A refusal that proves nothing was sent (connection refused, 408, 429,
// 5xx) is retried with backoff (a 429 holds SendGrid's shared slot for every
// instance); a 4xx ends it (`dead`). Each outcome applies only to the claim
// it belongs to, so a late one never overwrites what happened since. No answer (timeout,
// reset, garbage), or a crash between 1 and 3, leaves the row `failed`: in
// doubt, never sent again automatically, reported in the log and the
// followups{status="failed"} metric for an operator (README).
//
// Call reminders and stale-deal alerts go to the Slack outbox (notifier.h)
// in the claim's transaction.

#include <atomic>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/core/status.h"
#include "db/database.h"
#include "db/followups.h"
#include "db/projections.h"
#include "http/client.h"
#include "monitoring/probes.h"

namespace crm {

struct FirePass {
  int sent = 0;        // emails accepted by SendGrid
  int queued = 0;      // Slack reminders / alerts queued
  int cancelled = 0;   // cancelled by the re-check in the claim
  int deferred = 0;    // moved to the send window
  int retried = 0;
  int waiting = 0;     // emails whose prospect is not discovered yet
  int dead = 0;
  int in_doubt = 0;
  bool more = false;   // the claim was full: call again
};

class FollowupExecutor {
 public:
  FollowupExecutor(const Config& config, std::string conninfo, monitoring::Metrics& metrics,
                   std::string instance);

  // The kinds this configuration can fire: email with a SendGrid API key and
  // a sender, call_reminder and stale_deal with a Slack webhook. Others wait.
  const std::vector<std::string>& kinds() const { return kinds_; }

  // Claims and fires what is due at `now` (default: the database's now()).
  Result<FirePass> fire_due(std::optional<Timestamp> now = std::nullopt);

  // Marks timers left `sending` past their lease as `failed` (in doubt) and
  // publishes the follow-up metrics.
  Status report();

  // Runs until `stop` is set; the email in flight is finished first.
  void run(const std::atomic<bool>& stop);

 private:
  enum class SendResult { kSent, kRetry, kDead, kInDoubt };
  SendResult send_email(const db::ClaimedFollowup& f);
  Status finish(const db::ClaimedFollowup& f, SendResult result, const http::Response& response,
                const std::string& error);

  const Config& config_;
  db::Database db_;
  monitoring::Metrics& metrics_;
  std::string instance_;
  std::vector<std::string> kinds_;
  db::ProjectionOptions projection_;
  db::SendWindow window_;
  http::Client http_;
  std::mt19937_64 rng_{std::random_device{}()};
  const std::atomic<bool>* stop_ = nullptr;
};

// The Event the executor records when SendGrid accepted a follow-up email:
// a crm.email.sent whose email_id is the follow-up's id, at the claim's
// time, with id "followup:<id>:sent" (so recording it twice is a no-op).
Event followup_sent_event(const db::ClaimedFollowup& f,
                          const std::optional<std::string>& provider_message_id);

// Records that event and projects it (timeline, email_activities, the
// prospect, the next sequence step), inside `tx`.
void record_followup_email(pqxx::transaction_base& tx, const Event& sent,
                           const db::ProjectionOptions& options);

// The mail send body for a follow-up (no secrets in it).
std::string sendgrid_body(const db::ClaimedFollowup& f, const Config& config,
                          const std::string& template_id);

}  // namespace crm
