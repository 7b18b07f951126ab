#include "db/notifications.h"

namespace crm::db {
namespace {

// $1 owner, $2 lease (ms). The slot row is locked by the first instance to
// get there; another one waits for its commit, sees the slot moved, and
// claims nothing.
constexpr const char* kClaim = R"SQL(
WITH n AS (
  SELECT id FROM notifications
  WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
  ORDER BY next_attempt_at, id
  LIMIT 1
  FOR UPDATE SKIP LOCKED
), slot AS (
  -- clock_timestamp(): the second counts from now, not from the start of
  -- a transaction that may have waited for the slot row's lock.
  UPDATE api_slots SET next_at = clock_timestamp() + interval '1 second'
  WHERE api = 'slack' AND next_at <= clock_timestamp() AND EXISTS (SELECT 1 FROM n)
  RETURNING api
)
UPDATE notifications x SET status = 'sending', attempts = x.attempts + 1, lease_owner = $1,
  lease_expires_at = now() + $2::bigint * interval '1 millisecond', updated_at = now()
FROM n
WHERE x.id = n.id AND EXISTS (SELECT 1 FROM slot)
RETURNING x.id, x.kind, x.prospect_id, x.payload::text, x.attempts,
  (SELECT p.name FROM prospects p WHERE p.id = x.prospect_id),
  (SELECT p.company FROM prospects p WHERE p.id = x.prospect_id)
)SQL";

constexpr const char* kWait = R"SQL(
SELECT (extract(epoch FROM GREATEST(m, slot) - now()) * 1000)::bigint
FROM (SELECT (SELECT min(next_attempt_at) FROM notifications
              WHERE status IN ('pending', 'failed')) AS m,
             (SELECT next_at FROM api_slots WHERE api = 'slack') AS slot) x
WHERE m IS NOT NULL
)SQL";

constexpr const char* kSent = R"SQL(
UPDATE notifications SET status = 'sent', sent_at = now(), last_error = NULL, lease_owner = NULL,
  lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'sending'
)SQL";

constexpr const char* kRetry = R"SQL(
UPDATE notifications SET
  status = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'failed' END,
  next_attempt_at = now() + $2::bigint * interval '1 millisecond',
  last_error = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'sending'
)SQL";

constexpr const char* kDead = R"SQL(
UPDATE notifications SET status = 'dead', last_error = $2, lease_owner = NULL,
  lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'sending'
)SQL";

constexpr const char* kExpired = R"SQL(
UPDATE notifications SET status = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'failed' END,
  next_attempt_at = now(),
  last_error = CASE WHEN attempts >= $1
                    THEN 'the worker stopped while sending its last attempt; giving up'
                    ELSE 'the worker stopped while sending; sending again' END,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status = 'sending' AND lease_expires_at < now()
)SQL";

std::optional<std::string> optional_text(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

}  // namespace

NotificationClaim claim_notification(pqxx::transaction_base& tx, const std::string& owner,
                                     Millis lease) {
  NotificationClaim out;
  const pqxx::result r = tx.exec_params(kClaim, owner, static_cast<long long>(lease.count()));
  if (!r.empty()) {
    ClaimedNotification n;
    n.id = r[0][0].as<std::string>();
    n.kind = r[0][1].as<std::string>();
    n.prospect_id = optional_text(r[0][2]);
    n.payload_json = r[0][3].as<std::string>();
    n.attempts = r[0][4].as<int>();
    n.name = optional_text(r[0][5]);
    n.company = optional_text(r[0][6]);
    out.item = std::move(n);
    return out;
  }
  const pqxx::result w = tx.exec(kWait);
  if (!w.empty() && !w[0][0].is_null()) out.wait = Millis{w[0][0].as<long long>()};
  return out;
}

void notification_sent(pqxx::transaction_base& tx, const std::string& id) {
  tx.exec_params(kSent, id);
}

void notification_retry(pqxx::transaction_base& tx, const std::string& id, Millis delay,
                        int max_attempts, const std::string& error) {
  tx.exec_params(kRetry, id, static_cast<long long>(delay.count()), max_attempts, error);
}

void notification_dead(pqxx::transaction_base& tx, const std::string& id, const std::string& error) {
  tx.exec_params(kDead, id, error);
}

int retry_expired_notifications(pqxx::transaction_base& tx, int max_attempts) {
  return static_cast<int>(tx.exec_params(kExpired, max_attempts).affected_rows());
}

}  // namespace crm::db
