#pragma once
// The follow-up timers as the executor sees them (SPEC.md §5 `followups`,
// §6 SendGrid): claim what is due, record how each firing ended.
//
//   scheduled ──claim──► sending ──202──► sent
//       ▲                   │  ├─ refused, retryable (429, 5xx, not sent) ─► scheduled (later)
//       │                   │  ├─ refused for good (4xx), or out of attempts ─► dead
//       │                   │  └─ no answer / crash before `sent` ─► failed (in doubt)
//       └─ send window      └─ call reminder / stale deal: Slack outbox row, sent
//   scheduled ──a cancelling event (at apply time or inside the claim)──► cancelled
//
// `failed` means "may or may not have gone out": it is never retried
// automatically (at most one email, always) and waits for an operator.
//
// Every function runs inside the caller's transaction; times are the
// database's clock unless `now` (a fake clock for tests) is given.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/core/time.h"

namespace crm::db {

// Where email follow-ups may go out: [start_min, end_min) minutes of the
// prospect's local day, weekdays only unless `weekends`.
struct SendWindow {
  int start_min = 0;
  int end_min = 24 * 60;
  bool weekends = true;
  std::string default_zone = "UTC";
};

struct ClaimOptions {
  std::vector<std::string> kinds;  // the kinds to claim
  int limit = 20;
  std::string owner;               // lease owner: the instance
  // How long the claimed rows may stay `sending` before a crash is assumed
  // (an email: one SendGrid request and recording its answer).
  Millis lease{15000};
  SendWindow window;
  std::optional<Timestamp> now;    // tests: a fake clock
  // An email whose prospect is not discovered yet (no address, no
  // crm.prospect.discovered applied) waits this long for it, looked at
  // again after as long as it has waited, within these bounds.
  Millis prospect_wait{3600 * 1000};
  Millis prospect_look_min{1000};
  Millis prospect_look_max{600 * 1000};
};

struct ClaimedFollowup {
  std::string id;
  std::string kind;
  std::string prospect_id;
  std::optional<std::string> email;    // the prospect's address
  std::optional<std::string> name;
  std::optional<std::string> company;
  std::optional<std::string> template_id;
  std::optional<std::string> email_id;  // the email a sequence step follows up
  std::optional<std::string> call_id;
  std::optional<std::string> deal_id;
  std::optional<int> sequence_step;
  Timestamp due_at;
  Timestamp claimed_at;                 // the database's clock
  int attempts = 0;                     // this one included
};

struct ClaimResult {
  std::vector<ClaimedFollowup> fired;   // now `sending`
  int cancelled = 0;                    // cancelled by the re-check
  int deferred = 0;                     // moved to the next send window
  // Emails whose prospect is not discovered yet: still `scheduled`, or
  // `dead` once they have waited ClaimOptions::prospect_wait.
  std::vector<ClaimedFollowup> waiting;
  std::vector<ClaimedFollowup> given_up;
};

// Takes due timers of the given kinds (FOR UPDATE SKIP LOCKED: any number
// of executors share them), re-checks the cancellation rule on each, moves
// emails outside the send window, keeps emails whose prospect is not
// discovered yet waiting for it, and marks the rest `sending`. Emails are
// not claimed while SendGrid's shared slot is held (after a 429).
ClaimResult claim_due(pqxx::transaction_base& tx, const ClaimOptions& options);

// Slack kinds: queues the notification ("followup:<id>") and marks the
// row sent, in the claim's transaction.
void queue_notifications(pqxx::transaction_base& tx, const std::vector<const ClaimedFollowup*>& rows);

// How one claimed email ended. Each applies only to the row as this claim
// left it (same claimed_at, and for all but `sent` still `sending` under
// this owner), so a late outcome can never overwrite what happened to the
// row since (its lease ran out, an operator resolved it, another claim).
//
// The send was accepted: also when the row was meanwhile reported in doubt,
// or an operator wrongly said it was not sent (before it was claimed again):
// a 202 is proof, and it must not go out twice.
void mark_sent(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
               const std::optional<std::string>& provider_message_id);
// Refused, and certainly not sent: another attempt after `delay`, or dead
// once `max_attempts` were made.
void mark_retry(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
                Millis delay, int max_attempts, const std::string& error);
// Refused for good: never sent.
void mark_dead(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
               const std::string& error);
// Maybe sent (no answer): in doubt, for an operator.
void mark_in_doubt(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
                   const std::string& error);

// A shared rate-limit slot (api_slots: "sendgrid", "slack") held: nobody
// calls that API before `delay` has passed.
void hold_api_slot(pqxx::transaction_base& tx, const std::string& api, Millis delay);

// Rows left `sending` past their lease (the worker died between claiming
// and recording): `failed`, in doubt. Returns their ids, each once.
std::vector<std::string> fail_expired_leases(pqxx::transaction_base& tx);

// Recomputes prospects.next_follow_up_at after timers fired or ended.
void refresh_next_follow_up(pqxx::transaction_base& tx, const std::vector<std::string>& prospect_ids);

struct FollowupStats {
  std::map<std::string, long long> by_status;
  double overdue_seconds = 0;  // of the oldest due scheduled timer
};
FollowupStats followup_stats(pqxx::transaction_base& tx);

// Time until the next timer of these kinds is due and claimable (zero or
// negative: now; emails wait for SendGrid's slot), nullopt when none waits.
std::optional<Millis> next_due_in(pqxx::transaction_base& tx, const std::vector<std::string>& kinds);

// The row of a `failed` (in doubt) follow-up, as it was claimed; nullopt
// if it is not in doubt. Takes no lock.
std::optional<ClaimedFollowup> find_in_doubt(pqxx::transaction_base& tx, const std::string& id);

// An operator's verdict on a `failed` (in doubt) follow-up email: it went
// out (sent, at its claim time) or it did not (scheduled again, due now).
// False if it is not in doubt.
bool resolve_in_doubt(pqxx::transaction_base& tx, const std::string& id, bool was_sent);

}  // namespace crm::db
