#include "db/followups.h"

#include <algorithm>

#include <boost/json.hpp>

namespace crm::db {
namespace {

namespace json = boost::json;

// $1 kinds (JSON array), $2 limit, $3 owner, $4 lease per email (ms),
// $5 now (NULL: the database's), $6 default zone, $7 window start, $8 end
// (minutes), $9 weekends, $10 how long an email waits for its prospect's
// discovery (ms), $11 and $12 the shortest and longest wait between two
// looks (ms).
//
// An email whose prospect has no address and no crm.prospect.discovered
// applied yet stays `scheduled` (`waiting`): looked at again after as long
// as it has waited so far, within $11..$12, and `dead` once it has waited
// $10. Decided here, so it never becomes `sending`: a crash cannot leave an
// email in doubt that was never asked for.
//
// The row lock taken here is the one a cancelling event's transaction
// needs to cancel the row (kCancelFollowups), so the two serialize: either
// the event committed first and the re-check below sees it, or the claim
// committed first and the event leaves the `sending` row alone.
constexpr const char* kClaim = R"SQL(
WITH clock AS (SELECT COALESCE($5::timestamptz, now()) AS now),
due AS (
  -- The bound is written out (not read from `clock`) so that it is an index
  -- condition on followups_due_idx: only due rows are read.
  SELECT f.id FROM followups f
  WHERE f.status = 'scheduled' AND COALESCE(f.next_attempt_at, f.due_at) <= COALESCE($5::timestamptz, now())
    AND f.kind = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
    AND (f.kind <> 'email'
         OR NOT EXISTS (SELECT 1 FROM api_slots s WHERE s.api = 'sendgrid' AND s.next_at > now()))
  ORDER BY COALESCE(f.next_attempt_at, f.due_at), f.id
  LIMIT $2
  FOR UPDATE OF f SKIP LOCKED
), chk AS (
  SELECT f.id, x.event_id, x.occurred_at, x.reason, p.email, p.name, p.company,
    f.kind = 'email' AND COALESCE(p.email, '') = '' AND p.profile_updated_at IS NULL AS undiscovered,
    f.wait_started_at,
    CASE WHEN f.kind = 'email'
         THEN crm_send_window_start(clock.now, p.time_zone, $6, $7, $8, $9) END AS allowed_at
  FROM due JOIN followups f ON f.id = due.id CROSS JOIN clock
  LEFT JOIN prospects p ON p.id = f.prospect_id
  LEFT JOIN LATERAL crm_followup_cancellation(
    f.id, f.prospect_id, f.kind, f.email_id, f.call_id, f.deal_id, f.source_time) x ON true
), verdict AS (
  SELECT chk.*, clock.now,
    CASE WHEN chk.event_id IS NOT NULL THEN 'cancelled'
         WHEN chk.undiscovered
              AND clock.now - COALESCE(chk.wait_started_at, clock.now) >= $10::bigint * interval '1 millisecond'
           THEN 'dead'
         WHEN chk.undiscovered THEN 'waiting'
         WHEN chk.allowed_at > clock.now THEN 'scheduled'
         ELSE 'sending' END AS next,
    clock.now + LEAST(GREATEST(clock.now - COALESCE(chk.wait_started_at, clock.now),
                               $11::bigint * interval '1 millisecond'),
                      $12::bigint * interval '1 millisecond') AS look_again_at
  FROM chk CROSS JOIN clock
)
UPDATE followups f SET
  status = CASE WHEN v.next = 'waiting' THEN 'scheduled' ELSE v.next END,
  cancel_reason = CASE WHEN v.next = 'cancelled' THEN v.reason ELSE f.cancel_reason END,
  cancelled_by_event = CASE WHEN v.next = 'cancelled' THEN v.event_id ELSE f.cancelled_by_event END,
  cancelled_at = CASE WHEN v.next = 'cancelled' THEN v.occurred_at ELSE f.cancelled_at END,
  next_attempt_at = CASE WHEN v.next = 'scheduled' THEN v.allowed_at
                         WHEN v.next = 'waiting' THEN v.look_again_at
                         ELSE f.next_attempt_at END,
  wait_started_at = CASE WHEN v.next = 'waiting' THEN COALESCE(f.wait_started_at, v.now) ELSE f.wait_started_at END,
  last_error = CASE WHEN v.next = 'waiting'
                    THEN 'waiting for the prospect: no crm.prospect.discovered of it is applied yet'
                    WHEN v.next = 'dead'
                    THEN 'the prospect was never discovered: no crm.prospect.discovered of it was applied within followups.prospect_wait, giving up'
                    ELSE f.last_error END,
  attempts = f.attempts + CASE WHEN v.next = 'sending' THEN 1 ELSE 0 END,
  lease_owner = CASE WHEN v.next = 'sending' THEN $3 ELSE f.lease_owner END,
  lease_expires_at = CASE WHEN v.next = 'sending'
                          THEN now() + $4::bigint * interval '1 millisecond'
                          ELSE f.lease_expires_at END,
  claimed_at = CASE WHEN v.next = 'sending' THEN v.now ELSE f.claimed_at END,
  updated_at = now()
FROM verdict v
WHERE f.id = v.id
RETURNING f.id, f.status, f.kind, f.prospect_id, v.email, v.name, v.company, f.template,
  f.email_id, f.call_id, f.deal_id, f.sequence_step,
  (extract(epoch FROM f.due_at) * 1000000)::bigint, (extract(epoch FROM v.now) * 1000000)::bigint,
  f.attempts, v.next
)SQL";

constexpr const char* kQueueNotifications = R"SQL(
WITH f AS (
  UPDATE followups SET status = 'sent', sent_at = claimed_at, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = now()
  WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)) AND status = 'sending'
  RETURNING id, kind, prospect_id, due_at, call_id, deal_id, template)
INSERT INTO notifications (id, kind, prospect_id, payload)
SELECT 'followup:' || f.id, f.kind, f.prospect_id,
  jsonb_strip_nulls(jsonb_build_object('followup_id', f.id, 'due_at', f.due_at,
    'call_id', f.call_id, 'deal_id', f.deal_id, 'template', f.template,
    'scheduled_at', (SELECT c.scheduled_at FROM call_activities c WHERE c.id = f.call_id)))
FROM f
ON CONFLICT (id) DO NOTHING
)SQL";

// $1 id, $2 claimed_at, $3 owner: the claim an outcome belongs to.
constexpr const char* kMarkSent = R"SQL(
UPDATE followups SET status = 'sent', provider_message_id = $4, sent_at = now(),
  lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, updated_at = now()
WHERE id = $1 AND claimed_at = $2::timestamptz
  AND (status IN ('failed', 'scheduled') OR (status = 'sending' AND lease_owner = $3))
)SQL";

constexpr const char* kMarkRetry = R"SQL(
UPDATE followups SET
  status = CASE WHEN attempts >= $5 THEN 'dead' ELSE 'scheduled' END,
  next_attempt_at = CASE WHEN attempts >= $5 THEN next_attempt_at
                         ELSE now() + $4::bigint * interval '1 millisecond' END,
  last_error = $6, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND claimed_at = $2::timestamptz AND status = 'sending' AND lease_owner = $3
)SQL";

constexpr const char* kMarkEnded = R"SQL(
UPDATE followups SET status = $4, last_error = $5, lease_owner = NULL, lease_expires_at = NULL,
  updated_at = now()
WHERE id = $1 AND claimed_at = $2::timestamptz AND status = 'sending' AND lease_owner = $3
)SQL";

constexpr const char* kHoldSlot = R"SQL(
UPDATE api_slots SET next_at = GREATEST(next_at, now() + $2::bigint * interval '1 millisecond')
WHERE api = $1
)SQL";

constexpr const char* kFailExpired = R"SQL(
UPDATE followups SET status = 'failed',
  last_error = 'in doubt: the worker stopped between claiming this email and recording '
               'SendGrid''s answer; it may have been sent and is not sent again',
  lease_owner = NULL, updated_at = now()
WHERE status = 'sending' AND lease_expires_at < now()
RETURNING id
)SQL";

constexpr const char* kRefreshNext = R"SQL(
UPDATE prospects p SET next_follow_up_at = n.next, updated_at = now()
FROM (SELECT id, crm_next_follow_up(id) AS next FROM prospects
      WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))) n
WHERE p.id = n.id AND p.next_follow_up_at IS DISTINCT FROM n.next
)SQL";

constexpr const char* kStats = R"SQL(
SELECT status, count(*),
  COALESCE(extract(epoch FROM now() - min(COALESCE(next_attempt_at, due_at))
                   FILTER (WHERE status = 'scheduled')), 0)
FROM followups GROUP BY status
)SQL";

// ORDER BY … LIMIT 1 (not min()) walks followups_due_idx and stops at the
// first row of a wanted kind. $1: the kinds other than email, $2: whether
// emails count (they also wait for SendGrid's slot).
constexpr const char* kNextDue = R"SQL(
WITH other AS (
  SELECT COALESCE(next_attempt_at, due_at) AS t FROM followups
  WHERE status = 'scheduled' AND kind = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
  ORDER BY COALESCE(next_attempt_at, due_at) LIMIT 1
), email AS (
  SELECT COALESCE(next_attempt_at, due_at) AS t FROM followups
  WHERE $2 AND status = 'scheduled' AND kind = 'email'
  ORDER BY COALESCE(next_attempt_at, due_at) LIMIT 1
)
SELECT (extract(epoch FROM LEAST(
          (SELECT t FROM other),
          (SELECT GREATEST(e.t, (SELECT next_at FROM api_slots WHERE api = 'sendgrid')) FROM email e))
        - clock_timestamp()) * 1000)::bigint
)SQL";

// The columns of kClaim's RETURNING, so one reader serves both.
constexpr const char* kFindInDoubt = R"SQL(
SELECT f.id, f.status, f.kind, f.prospect_id, p.email, p.name, p.company, f.template,
  f.email_id, f.call_id, f.deal_id, f.sequence_step,
  (extract(epoch FROM f.due_at) * 1000000)::bigint,
  (extract(epoch FROM COALESCE(f.claimed_at, now())) * 1000000)::bigint, f.attempts
FROM followups f LEFT JOIN prospects p ON p.id = f.prospect_id
WHERE f.id = $1 AND f.status = 'failed'
)SQL";

constexpr const char* kResolve = R"SQL(
UPDATE followups SET
  status = CASE WHEN $2 THEN 'sent' ELSE 'scheduled' END,
  sent_at = CASE WHEN $2 THEN claimed_at ELSE sent_at END,
  next_attempt_at = CASE WHEN $2 THEN next_attempt_at ELSE now() END,
  last_error = CASE WHEN $2 THEN 'resolved by an operator: sent'
                    ELSE 'resolved by an operator: not sent' END,
  updated_at = now()
WHERE id = $1 AND status = 'failed'
RETURNING prospect_id
)SQL";

std::string to_json(const std::vector<std::string>& values) {
  json::array a;
  for (const std::string& v : values) a.emplace_back(v);
  return json::serialize(a);
}

// Times come back as microseconds since the epoch (the server's text form
// of timestamptz depends on the session's DateStyle).
Timestamp as_timestamp(const pqxx::field& f) { return Timestamp{f.as<long long>()}; }

// NULL as a statement parameter.
const char* opt(const std::optional<std::string>& v) { return v ? v->c_str() : nullptr; }

template <typename T>
std::optional<T> optional(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<T>();
}

// One row in kClaim's RETURNING layout.
ClaimedFollowup followup_row(const pqxx::row& r) {
  ClaimedFollowup f;
  f.id = r[0].as<std::string>();
  f.kind = r[2].as<std::string>();
  f.prospect_id = r[3].is_null() ? std::string() : r[3].as<std::string>();
  f.email = optional<std::string>(r[4]);
  f.name = optional<std::string>(r[5]);
  f.company = optional<std::string>(r[6]);
  f.template_id = optional<std::string>(r[7]);
  f.email_id = optional<std::string>(r[8]);
  f.call_id = optional<std::string>(r[9]);
  f.deal_id = optional<std::string>(r[10]);
  f.sequence_step = optional<int>(r[11]);
  f.due_at = as_timestamp(r[12]);
  f.claimed_at = as_timestamp(r[13]);
  f.attempts = r[14].as<int>();
  return f;
}

}  // namespace

ClaimResult claim_due(pqxx::transaction_base& tx, const ClaimOptions& o) {
  ClaimResult out;
  if (o.kinds.empty()) return out;
  std::optional<std::string> now;
  if (o.now) now = format_rfc3339(*o.now);
  const pqxx::result rows =
      tx.exec_params(kClaim, to_json(o.kinds), o.limit, o.owner,
                     static_cast<long long>(o.lease.count()), opt(now), o.window.default_zone,
                     o.window.start_min, o.window.end_min, o.window.weekends,
                     static_cast<long long>(o.prospect_wait.count()),
                     static_cast<long long>(o.prospect_look_min.count()),
                     static_cast<long long>(o.prospect_look_max.count()));
  for (const auto& r : rows) {
    const std::string next = r[15].as<std::string>();
    if (next == "cancelled") {
      ++out.cancelled;
    } else if (next == "scheduled") {
      ++out.deferred;
    } else if (next == "waiting") {
      out.waiting.push_back(followup_row(r));
    } else if (next == "dead") {
      out.given_up.push_back(followup_row(r));
    } else {
      out.fired.push_back(followup_row(r));
    }
  }
  return out;
}

void queue_notifications(pqxx::transaction_base& tx, const std::vector<const ClaimedFollowup*>& rows) {
  if (rows.empty()) return;
  json::array ids;
  for (const ClaimedFollowup* f : rows) ids.emplace_back(f->id);
  tx.exec_params(kQueueNotifications, json::serialize(ids));
}

void mark_sent(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
               const std::optional<std::string>& provider_message_id) {
  tx.exec_params(kMarkSent, f.id, format_rfc3339(f.claimed_at), owner, opt(provider_message_id));
}

void mark_retry(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
                Millis delay, int max_attempts, const std::string& error) {
  tx.exec_params(kMarkRetry, f.id, format_rfc3339(f.claimed_at), owner,
                 static_cast<long long>(delay.count()), max_attempts, error);
}

void mark_dead(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
               const std::string& error) {
  tx.exec_params(kMarkEnded, f.id, format_rfc3339(f.claimed_at), owner, "dead", error);
}

void mark_in_doubt(pqxx::transaction_base& tx, const ClaimedFollowup& f, const std::string& owner,
                   const std::string& error) {
  tx.exec_params(kMarkEnded, f.id, format_rfc3339(f.claimed_at), owner, "failed", error);
}

void hold_api_slot(pqxx::transaction_base& tx, const std::string& api, Millis delay) {
  tx.exec_params(kHoldSlot, api, static_cast<long long>(delay.count()));
}

std::vector<std::string> fail_expired_leases(pqxx::transaction_base& tx) {
  std::vector<std::string> ids;
  for (const auto& r : tx.exec(kFailExpired)) ids.push_back(r[0].as<std::string>());
  return ids;
}

void refresh_next_follow_up(pqxx::transaction_base& tx, const std::vector<std::string>& prospect_ids) {
  if (prospect_ids.empty()) return;
  tx.exec_params(kRefreshNext, to_json(prospect_ids));
}

FollowupStats followup_stats(pqxx::transaction_base& tx) {
  FollowupStats s;
  for (const auto& r : tx.exec(kStats)) {
    s.by_status[r[0].as<std::string>()] = r[1].as<long long>();
    s.overdue_seconds = std::max(s.overdue_seconds, r[2].as<double>());
  }
  return s;
}

std::optional<Millis> next_due_in(pqxx::transaction_base& tx, const std::vector<std::string>& kinds) {
  if (kinds.empty()) return std::nullopt;
  std::vector<std::string> other;
  bool email = false;
  for (const std::string& k : kinds) {
    if (k == "email") {
      email = true;
    } else {
      other.push_back(k);
    }
  }
  const pqxx::result r = tx.exec_params(kNextDue, to_json(other), email);
  if (r.empty() || r[0][0].is_null()) return std::nullopt;
  return Millis{r[0][0].as<long long>()};
}

std::optional<ClaimedFollowup> find_in_doubt(pqxx::transaction_base& tx, const std::string& id) {
  const pqxx::result r = tx.exec_params(kFindInDoubt, id);
  if (r.empty()) return std::nullopt;
  return followup_row(r[0]);
}

bool resolve_in_doubt(pqxx::transaction_base& tx, const std::string& id, bool was_sent) {
  const pqxx::result r = tx.exec_params(kResolve, id, was_sent);
  if (r.empty()) return false;
  if (!r[0][0].is_null()) refresh_next_follow_up(tx, {r[0][0].as<std::string>()});
  return true;
}

}  // namespace crm::db
