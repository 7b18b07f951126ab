#include "db/sync.h"

#include <algorithm>

#include <boost/json.hpp>

#include "db/projections.h"

namespace crm::db {
namespace {

namespace json = boost::json;

std::string to_json(const std::vector<std::string>& values) {
  json::array a;
  for (const auto& v : values) a.emplace_back(v);
  return json::serialize(a);
}

// [{"job":id,"claim":µs}]: a claim's jobs, for matching them exactly.
json::object claim_ref(const SyncJob& job) {
  return json::object{{"job", job.id}, {"claim", job.claim}};
}

std::string claim_refs(const std::vector<SyncJob>& jobs) {
  json::array a;
  for (const auto& j : jobs) a.emplace_back(claim_ref(j));
  return json::serialize(a);
}

std::optional<std::string> opt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

// A deal or contact due to be pushed whose company is not in HubSpot and
// never had a job gets one now, so the company is pushed first and the
// association can be made. ('-infinity': any real request is newer.)
// Companies (not in HubSpot) of deals and contacts about to be pushed: the
// ones that never had a job get one ('-infinity': any real request is
// newer); returned are those with a job pending or in flight now.
constexpr const char* kOnTheirWay = R"SQL(
WITH c AS (SELECT DISTINCT x AS id FROM jsonb_array_elements_text($1::jsonb) x),
queued AS (
  INSERT INTO sync_queue (entity_type, entity_id, operation, requested_at)
  SELECT 'company', c.id, 'upsert', '-infinity' FROM c
  WHERE NOT EXISTS (SELECT 1 FROM sync_queue k WHERE k.entity_type = 'company' AND k.entity_id = c.id)
  ON CONFLICT DO NOTHING
  RETURNING entity_id)
SELECT entity_id FROM queued
UNION
SELECT k.entity_id FROM sync_queue k JOIN c ON k.entity_type = 'company' AND k.entity_id = c.id
WHERE k.status IN ('pending', 'in_progress')
)SQL";

// Jobs whose worker died during their last allowed attempt: dead, not
// claimed again (a job that kills its worker every time must end). $1 max.
constexpr const char* kBuryExpired = R"SQL(
UPDATE sync_queue SET status = 'dead', lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
  last_error = 'its worker stopped during each of its ' || attempts || ' attempts (killed or crashed while pushing it)'
WHERE status = 'in_progress' AND lease_expires_at < now() AND attempts >= $1
)SQL";

// $1 entity type, $2 owner, $3 lease (ms), $4 limit.
//
// Jobs whose lease ran out come first (their worker died), then due
// pending ones in order, read from sync_queue_due_idx until the batch is
// full. Every condition on `j` is on the row itself: when a row was changed
// by a claim that committed after this statement's snapshot, PostgreSQL
// re-checks them on the new version before locking it, so a job another
// worker just claimed is not claimed again.
constexpr const char* kClaim = R"SQL(
WITH expired AS (
  SELECT j.id FROM sync_queue j
  WHERE j.entity_type = $1 AND j.status = 'in_progress' AND j.lease_expires_at < now()
  ORDER BY j.lease_expires_at
  LIMIT $4
  FOR UPDATE OF j SKIP LOCKED
), scan AS (
  -- The first due jobs in order, at most 10 batches' worth: jobs blocked
  -- behind their company must not make every claim read the whole backlog.
  SELECT id FROM sync_queue
  WHERE entity_type = $1 AND status = 'pending' AND next_attempt_at <= now()
  ORDER BY next_attempt_at, id
  LIMIT 10 * $4
), due AS (
  SELECT j.id FROM scan JOIN sync_queue j ON j.id = scan.id
  WHERE j.entity_type = $1 AND j.status = 'pending' AND j.next_attempt_at <= now()
    -- One job per entity in flight.
    AND NOT EXISTS (
      SELECT 1 FROM sync_queue o
      WHERE o.entity_type = j.entity_type AND o.entity_id = j.entity_id
        AND o.status = 'in_progress')
    -- A company before its deals and contacts.
    AND (j.entity_type = 'company' OR j.operation = 'delete' OR NOT EXISTS (
      SELECT 1 FROM sync_queue k
      WHERE k.entity_type = 'company' AND k.status IN ('pending', 'in_progress')
        AND k.entity_id IN (
          SELECT d.company_id FROM deals d WHERE j.entity_type = 'deal' AND d.id = j.entity_id
          UNION ALL
          SELECT c.company_id FROM contacts c WHERE j.entity_type = 'contact' AND c.id = j.entity_id)))
  ORDER BY j.next_attempt_at, j.id
  LIMIT $4
  FOR UPDATE OF j SKIP LOCKED
), pick AS (
  SELECT id FROM (SELECT id, 0 AS o FROM expired UNION ALL SELECT id, 1 FROM due) x
  ORDER BY o LIMIT $4
)
UPDATE sync_queue q SET
  in_doubt = q.in_doubt OR q.status = 'in_progress',
  status = 'in_progress',
  attempts = q.attempts + 1,
  lease_owner = $2,
  claimed_at = clock_timestamp(),
  lease_expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond',
  updated_at = now()
FROM pick
WHERE q.id = pick.id
RETURNING q.id, q.entity_type, q.entity_id, q.operation, q.attempts, q.in_doubt,
  (extract(epoch FROM q.claimed_at) * 1000000)::bigint
)SQL";

// $1 owner, $2 claim refs, $3 lease (ms).
constexpr const char* kRenew = R"SQL(
UPDATE sync_queue q SET lease_expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
FROM jsonb_to_recordset($2::jsonb) AS c(job bigint, claim bigint)
WHERE q.id = c.job AND q.status = 'in_progress' AND q.lease_owner = $1
  AND (extract(epoch FROM q.claimed_at) * 1000000)::bigint = c.claim
RETURNING q.id
)SQL";

// Before a claimed job goes back to `pending`: a newer request of its
// entity waiting as a pending job is folded into it (its operation and
// time), so there is still one pending job per entity. $1 owner, $2 refs.
constexpr const char* kAbsorbPending = R"SQL(
WITH mine AS (
  -- Locked, and the claim re-checked on the row as it is then: a job taken
  -- over meanwhile does not absorb anything.
  SELECT q.id, q.entity_type, q.entity_id
  FROM sync_queue q JOIN jsonb_to_recordset($2::jsonb) AS c(job bigint, claim bigint) ON q.id = c.job
  WHERE q.status = 'in_progress' AND q.lease_owner = $1
    AND (extract(epoch FROM q.claimed_at) * 1000000)::bigint = c.claim
  FOR UPDATE OF q
), newer AS (
  DELETE FROM sync_queue s USING mine
  WHERE s.entity_type = mine.entity_type AND s.entity_id = mine.entity_id AND s.status = 'pending'
  RETURNING mine.id AS job, s.operation, s.requested_at, s.source_event_id
)
UPDATE sync_queue q SET operation = newer.operation, requested_at = newer.requested_at,
  source_event_id = newer.source_event_id
FROM newer WHERE q.id = newer.job
)SQL";

// $1 owner, $2 outcomes, $3 max attempts. The rows' sync columns are
// written only for jobs this claim still holds; updated_at (the web app's
// time, which the HubSpot conflict rule compares with) is left alone.
constexpr const char* kRecord = R"SQL(
WITH o AS (
  SELECT * FROM jsonb_to_recordset($2::jsonb) AS o(job bigint, claim bigint, kind text,
    error text, delay_ms bigint, in_doubt boolean, refund boolean, hubspot_id text, linked text,
    row_status text)
), j AS (
  UPDATE sync_queue q SET
    status = CASE o.kind
               WHEN 'completed' THEN 'completed'
               WHEN 'failed' THEN 'failed'
               ELSE CASE WHEN NOT o.refund AND q.attempts >= $3 THEN 'dead' ELSE 'pending' END
             END,
    attempts = q.attempts - CASE WHEN o.refund THEN 1 ELSE 0 END,
    next_attempt_at = CASE WHEN o.kind = 'retry'
                           THEN clock_timestamp() + o.delay_ms * interval '1 millisecond'
                           ELSE q.next_attempt_at END,
    last_error = CASE WHEN o.refund THEN q.last_error ELSE o.error END,
    in_doubt = o.in_doubt,
    lease_owner = NULL,
    lease_expires_at = NULL,
    updated_at = now()
  FROM o
  WHERE q.id = o.job AND q.status = 'in_progress' AND q.lease_owner = $1
    AND (extract(epoch FROM q.claimed_at) * 1000000)::bigint = o.claim
  RETURNING q.id, q.entity_type, q.entity_id, q.status
), x AS (
  SELECT o.hubspot_id, o.linked, j.entity_type, j.entity_id,
    CASE WHEN j.status IN ('dead', 'failed') THEN 'failed' ELSE o.row_status END AS row_status
  FROM o JOIN j ON j.id = o.job
), co AS (
  UPDATE companies t SET
    hubspot_company_id = COALESCE(x.hubspot_id, t.hubspot_company_id),
    hubspot_sync_status = COALESCE(x.row_status, t.hubspot_sync_status),
    last_hubspot_sync = CASE WHEN x.row_status IN ('synced', 'archived') THEN clock_timestamp()
                             ELSE t.last_hubspot_sync END
  FROM x WHERE x.entity_type = 'company' AND t.id = x.entity_id
  RETURNING t.id
), ct AS (
  UPDATE contacts t SET
    hubspot_contact_id = COALESCE(x.hubspot_id, t.hubspot_contact_id),
    hubspot_company_link = COALESCE(x.linked, t.hubspot_company_link),
    hubspot_sync_status = COALESCE(x.row_status, t.hubspot_sync_status),
    last_hubspot_sync = CASE WHEN x.row_status IN ('synced', 'archived') THEN clock_timestamp()
                             ELSE t.last_hubspot_sync END
  FROM x WHERE x.entity_type = 'contact' AND t.id = x.entity_id
  RETURNING t.id
), de AS (
  UPDATE deals t SET
    hubspot_deal_id = COALESCE(x.hubspot_id, t.hubspot_deal_id),
    hubspot_company_link = COALESCE(x.linked, t.hubspot_company_link),
    hubspot_sync_status = COALESCE(x.row_status, t.hubspot_sync_status),
    last_hubspot_sync = CASE WHEN x.row_status IN ('synced', 'archived') THEN clock_timestamp()
                             ELSE t.last_hubspot_sync END
  FROM x WHERE x.entity_type = 'deal' AND t.id = x.entity_id
  RETURNING t.id
)
SELECT j.id FROM j
)SQL";

constexpr const char* kLoadCompanies = R"SQL(
SELECT c.id, c.name, c.domain, c.phone, c.city, c.state, c.hubspot_company_id
FROM companies c WHERE c.id IN (SELECT jsonb_array_elements_text($1::jsonb))
)SQL";

constexpr const char* kLoadContacts = R"SQL(
SELECT x.id, x.email, x.first_name, x.last_name, x.phone, x.hubspot_contact_id, x.company_id,
  co.hubspot_company_id, x.hubspot_company_link
FROM contacts x LEFT JOIN companies co ON co.id = x.company_id
WHERE x.id IN (SELECT jsonb_array_elements_text($1::jsonb))
)SQL";

// closedate as epoch milliseconds at midnight UTC: what HubSpot accepts for
// date and datetime properties alike.
constexpr const char* kLoadDeals = R"SQL(
SELECT d.id, d.name, d.stage, d.amount::text,
  (extract(epoch FROM d.close_date::timestamp AT TIME ZONE 'UTC') * 1000)::bigint::text,
  d.hubspot_deal_id, d.company_id, co.hubspot_company_id, d.hubspot_company_link
FROM deals d LEFT JOIN companies co ON co.id = d.company_id
WHERE d.id IN (SELECT jsonb_array_elements_text($1::jsonb))
)SQL";

constexpr const char* kKnownIds = R"SQL(
SELECT id, hubspot_company_id FROM companies
WHERE $1 = 'company' AND id IN (SELECT jsonb_array_elements_text($2::jsonb)) AND hubspot_company_id IS NOT NULL
UNION ALL
SELECT id, hubspot_contact_id FROM contacts
WHERE $1 = 'contact' AND id IN (SELECT jsonb_array_elements_text($2::jsonb)) AND hubspot_contact_id IS NOT NULL
UNION ALL
SELECT id, hubspot_deal_id FROM deals
WHERE $1 = 'deal' AND id IN (SELECT jsonb_array_elements_text($2::jsonb)) AND hubspot_deal_id IS NOT NULL
)SQL";

// The api's row is locked until the transaction ends: every instance takes
// budget through it, one at a time.
constexpr const char* kSlotWaitLocked = R"SQL(
SELECT CASE WHEN next_at > clock_timestamp()
            THEN ceil(extract(epoch FROM next_at - clock_timestamp()) * 1000)::bigint ELSE 0 END,
  window_max, window_ms
FROM api_slots WHERE api = $1 FOR UPDATE
)SQL";

constexpr const char* kRequestAnswered = R"SQL(
UPDATE api_requests SET at = clock_timestamp() WHERE id = $1
)SQL";

constexpr const char* kSetWindow = R"SQL(
UPDATE api_slots SET window_max = $2, window_ms = $3 WHERE api = $1
)SQL";

constexpr const char* kWindow = R"SQL(
SELECT window_max, window_ms FROM api_slots WHERE api = $1 AND window_max IS NOT NULL AND window_ms IS NOT NULL
)SQL";

constexpr const char* kSlotWait = R"SQL(
SELECT CASE WHEN next_at > clock_timestamp()
            THEN ceil(extract(epoch FROM next_at - clock_timestamp()) * 1000)::bigint ELSE 0 END
FROM api_slots WHERE api = $1
)SQL";

constexpr const char* kPruneRequests = R"SQL(
DELETE FROM api_requests WHERE api = $1 AND at < clock_timestamp() - $2::bigint * interval '1 millisecond'
)SQL";

// The max-th newest request inside the window: while there is one, the
// window is full until it leaves. $2 window (ms), $3 max.
constexpr const char* kWindowFull = R"SQL(
SELECT ceil(extract(epoch FROM at + $2::bigint * interval '1 millisecond' - clock_timestamp()) * 1000)::bigint
FROM api_requests
WHERE api = $1 AND at > clock_timestamp() - $2::bigint * interval '1 millisecond'
ORDER BY at DESC OFFSET $3::int - 1 LIMIT 1
)SQL";

constexpr const char* kCountRequest = R"SQL(
INSERT INTO api_requests (api, at) VALUES ($1, clock_timestamp()) RETURNING id
)SQL";

constexpr const char* kRequestsIn = R"SQL(
SELECT count(*) FROM api_requests WHERE api = $1 AND at > clock_timestamp() - $2::bigint * interval '1 millisecond'
)SQL";

constexpr const char* kStats = R"SQL(
SELECT status, count(*) FROM sync_queue GROUP BY status
)SQL";

constexpr const char* kOldestPending = R"SQL(
SELECT COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM sync_queue WHERE status IN ('pending', 'in_progress')
)SQL";

constexpr const char* kNextDue = R"SQL(
SELECT floor(extract(epoch FROM min(t) - clock_timestamp()) * 1000)::bigint FROM (
  SELECT min(next_attempt_at) AS t FROM sync_queue WHERE status = 'pending'
  UNION ALL
  SELECT min(lease_expires_at) FROM sync_queue WHERE status = 'in_progress') s
)SQL";

// $1 statuses (JSON array, empty = all), $2 limit.
constexpr const char* kList = R"SQL(
SELECT id, entity_type, entity_id, operation, status, attempts,
  to_char(next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
  to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), last_error
FROM sync_queue
WHERE jsonb_array_length($1::jsonb) = 0 OR status IN (SELECT jsonb_array_elements_text($1::jsonb))
ORDER BY id DESC LIMIT $2
)SQL";

// The entities of the failed and dead jobs a redrive looks at ($1: one job,
// NULL: all).
constexpr const char* kRedriveEntities = R"SQL(
SELECT DISTINCT entity_type, entity_id FROM sync_queue
WHERE status IN ('failed', 'dead') AND ($1::bigint IS NULL OR id = $1::bigint)
)SQL";

// A failed or dead job is superseded by any newer job of its entity (that
// one pushes a newer state); only the newest comes back.
constexpr const char* kRedrive = R"SQL(
WITH cand AS (
  SELECT j.id,
    NOT EXISTS (SELECT 1 FROM sync_queue n
                WHERE n.entity_type = j.entity_type AND n.entity_id = j.entity_id
                  AND (n.id > j.id OR n.status IN ('pending', 'in_progress')))
      AS newest
  FROM sync_queue j
  WHERE j.status IN ('failed', 'dead') AND ($1::bigint IS NULL OR j.id = $1::bigint)
  FOR UPDATE OF j
), r AS (
  UPDATE sync_queue q SET status = 'pending', attempts = 0, next_attempt_at = now(),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
  FROM cand WHERE q.id = cand.id AND cand.newest
  RETURNING q.id
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM cand WHERE NOT newest)
)SQL";

const char* outcome_kind(SyncOutcome::Kind k) {
  switch (k) {
    case SyncOutcome::Kind::kCompleted: return "completed";
    case SyncOutcome::Kind::kRetry: return "retry";
    case SyncOutcome::Kind::kFailed: return "failed";
  }
  return "failed";
}

json::value nullable(const std::optional<std::string>& v) {
  if (!v) return nullptr;
  return json::value(*v);
}

std::string outcomes_json(const std::vector<SyncOutcome>& outcomes, bool refund) {
  json::array a;
  for (const auto& o : outcomes) {
    json::object x = claim_ref(*o.job);
    x["kind"] = outcome_kind(o.kind);
    x["refund"] = refund || o.refund_attempt;
    x["error"] = o.error.empty() ? json::value(nullptr) : json::value(o.error);
    x["delay_ms"] = static_cast<std::int64_t>(std::max<long long>(0, o.delay.count()));
    x["in_doubt"] = o.in_doubt;
    x["hubspot_id"] = nullable(o.hubspot_id);
    x["linked"] = nullable(o.linked_company);
    x["row_status"] = nullable(o.row_status);
    a.emplace_back(std::move(x));
  }
  return json::serialize(a);
}

std::vector<long long> write_outcomes(pqxx::transaction_base& tx, const std::string& owner,
                                      const std::vector<SyncOutcome>& outcomes, int max_attempts,
                                      bool refund) {
  std::vector<SyncJob> going_back;
  std::vector<std::pair<std::string, std::string>> entities;
  for (const auto& o : outcomes) {
    const bool refunded = refund || o.refund_attempt;
    if (o.kind == SyncOutcome::Kind::kRetry && (refunded || o.job->attempts < max_attempts)) {
      going_back.push_back(*o.job);
      entities.emplace_back(o.job->entity_type, o.job->entity_id);
    }
  }
  if (!going_back.empty()) {
    // The enqueue of a newer request takes the same lock: it either
    // committed its pending job before (absorbed here) or waits and finds
    // this one pending (and updates it).
    lock_sync_entities(tx, entities);
    tx.exec_params(kAbsorbPending, owner, claim_refs(going_back));
  }
  std::vector<long long> written;
  for (const auto& r : tx.exec_params(kRecord, owner, outcomes_json(outcomes, refund), max_attempts)) {
    written.push_back(r[0].as<long long>());
  }
  return written;
}

}  // namespace

const std::vector<std::string>& sync_entity_types() {
  static const std::vector<std::string> types{"company", "contact", "deal"};
  return types;
}

std::vector<SyncJob> claim_sync_jobs(pqxx::transaction_base& tx, const std::string& owner,
                                     Millis lease, int limit, int max_attempts,
                                     std::size_t first_type) {
  tx.exec_params(kBuryExpired, max_attempts);
  std::vector<SyncJob> jobs;
  const auto& types = sync_entity_types();
  for (std::size_t n = 0; n < types.size() && jobs.empty(); ++n) {
    const std::string& type = types[(first_type + n) % types.size()];
    for (const auto& r : tx.exec_params(kClaim, type, owner, static_cast<long long>(lease.count()), limit)) {
      SyncJob j;
      j.id = r[0].as<long long>();
      j.entity_type = r[1].as<std::string>();
      j.entity_id = r[2].as<std::string>();
      j.operation = r[3].as<std::string>();
      j.attempts = r[4].as<int>();
      j.in_doubt = r[5].as<bool>();
      j.claim = r[6].as<long long>();
      jobs.push_back(std::move(j));
    }
  }
  std::sort(jobs.begin(), jobs.end(), [](const SyncJob& a, const SyncJob& b) { return a.id < b.id; });
  return jobs;
}

std::set<std::string> companies_on_their_way(pqxx::transaction_base& tx,
                                             const std::vector<std::string>& company_ids) {
  std::set<std::string> out;
  if (company_ids.empty()) return out;
  for (const auto& r : tx.exec_params(kOnTheirWay, to_json(company_ids))) out.insert(r[0].as<std::string>());
  return out;
}

std::vector<long long> renew_sync_leases(pqxx::transaction_base& tx, const std::string& owner,
                                         const std::vector<SyncJob>& jobs, Millis lease) {
  std::vector<long long> ids;
  if (jobs.empty()) return ids;
  for (const auto& r : tx.exec_params(kRenew, owner, claim_refs(jobs), static_cast<long long>(lease.count()))) {
    ids.push_back(r[0].as<long long>());
  }
  return ids;
}

void release_sync_jobs(pqxx::transaction_base& tx, const std::string& owner,
                       const std::vector<SyncJob>& jobs) {
  std::vector<SyncOutcome> outcomes;
  for (const auto& j : jobs) {
    SyncOutcome o;
    o.job = &j;
    o.kind = SyncOutcome::Kind::kRetry;
    o.in_doubt = j.in_doubt;
    outcomes.push_back(o);
  }
  if (!outcomes.empty()) write_outcomes(tx, owner, outcomes, 0, true);
}

std::map<std::string, SyncRow> load_sync_rows(pqxx::transaction_base& tx,
                                              const std::string& entity_type,
                                              const std::vector<std::string>& ids,
                                              const DealMapping& deals) {
  std::map<std::string, SyncRow> rows;
  if (ids.empty()) return rows;
  const std::string list = to_json(ids);
  if (entity_type == "company") {
    for (const auto& r : tx.exec_params(kLoadCompanies, list)) {
      SyncRow row;
      row.id = r[0].as<std::string>();
      row.properties = {{"name", opt(r[1])}, {"domain", opt(r[2])}, {"phone", opt(r[3])},
                        {"city", opt(r[4])}, {"state", opt(r[5])}};
      row.hubspot_id = opt(r[6]);
      rows.emplace(row.id, std::move(row));
    }
  } else if (entity_type == "contact") {
    for (const auto& r : tx.exec_params(kLoadContacts, list)) {
      SyncRow row;
      row.id = r[0].as<std::string>();
      row.properties = {{"email", opt(r[1])}, {"firstname", opt(r[2])}, {"lastname", opt(r[3])},
                        {"phone", opt(r[4])}};
      row.hubspot_id = opt(r[5]);
      row.company_id = opt(r[6]);
      row.company_hubspot_id = opt(r[7]);
      row.linked_company_hubspot_id = opt(r[8]);
      rows.emplace(row.id, std::move(row));
    }
  } else if (entity_type == "deal") {
    for (const auto& r : tx.exec_params(kLoadDeals, list)) {
      SyncRow row;
      row.id = r[0].as<std::string>();
      std::optional<std::string> stage = opt(r[2]);
      if (stage) {
        if (auto it = deals.stages.find(*stage); it != deals.stages.end()) stage = it->second;
      }
      row.properties = {{"dealname", opt(r[1])}, {"dealstage", stage},
                        {"pipeline", deals.pipeline}, {"amount", opt(r[3])},
                        {"closedate", opt(r[4])}};
      row.hubspot_id = opt(r[5]);
      row.company_id = opt(r[6]);
      row.company_hubspot_id = opt(r[7]);
      row.linked_company_hubspot_id = opt(r[8]);
      rows.emplace(row.id, std::move(row));
    }
  }
  return rows;
}

std::map<std::string, std::string> known_hubspot_ids(pqxx::transaction_base& tx,
                                                     const std::string& entity_type,
                                                     const std::vector<std::string>& ids) {
  std::map<std::string, std::string> known;
  if (ids.empty()) return known;
  for (const auto& r : tx.exec_params(kKnownIds, entity_type, to_json(ids))) {
    known[r[0].as<std::string>()] = r[1].as<std::string>();
  }
  return known;
}

std::vector<long long> record_sync_outcomes(pqxx::transaction_base& tx, const std::string& owner,
                                            const std::vector<SyncOutcome>& outcomes,
                                            int max_attempts) {
  if (outcomes.empty()) return {};
  return write_outcomes(tx, owner, outcomes, max_attempts, false);
}

ApiTake take_api_request(pqxx::transaction_base& tx, const std::string& api,
                         const std::vector<RateWindow>& config_windows, Millis margin) {
  ApiTake take;
  const pqxx::result slot = tx.exec_params(kSlotWaitLocked, api);
  std::vector<RateWindow> windows = config_windows;
  if (!slot.empty()) {
    if (slot[0][0].as<long long>() > 0) {
      take.wait = Millis{slot[0][0].as<long long>()};
      return take;
    }
    if (!slot[0][1].is_null() && !slot[0][2].is_null()) {
      windows.push_back({slot[0][1].as<int>(), Millis{slot[0][2].as<long long>()}});
    }
  }
  // Rows older than every window (and than a minute, as windows change)
  // can go.
  Millis horizon{60000};
  for (const auto& w : windows) horizon = std::max(horizon, w.interval + margin);
  tx.exec_params(kPruneRequests, api, static_cast<long long>(horizon.count()));
  Millis wait{0};
  for (const auto& w : windows) {
    if (w.max <= 0) continue;
    const pqxx::result full =
        tx.exec_params(kWindowFull, api, static_cast<long long>((w.interval + margin).count()), w.max);
    if (!full.empty()) wait = std::max(wait, Millis{std::max<long long>(1, full[0][0].as<long long>())});
  }
  if (wait > Millis{0}) {
    take.wait = wait;
    return take;
  }
  take.request = tx.exec_params(kCountRequest, api)[0][0].as<long long>();
  return take;
}

void api_request_answered(pqxx::transaction_base& tx, long long request) {
  tx.exec_params(kRequestAnswered, request);
}

void set_api_window(pqxx::transaction_base& tx, const std::string& api, const RateWindow& window) {
  tx.exec_params(kSetWindow, api, window.max, static_cast<long long>(window.interval.count()));
}

std::optional<RateWindow> api_window(pqxx::transaction_base& tx, const std::string& api) {
  const pqxx::result r = tx.exec_params(kWindow, api);
  if (r.empty()) return std::nullopt;
  return RateWindow{r[0][0].as<int>(), Millis{r[0][1].as<long long>()}};
}

Millis api_slot_wait(pqxx::transaction_base& tx, const std::string& api) {
  const pqxx::result r = tx.exec_params(kSlotWait, api);
  return r.empty() ? Millis{0} : Millis{r[0][0].as<long long>()};
}

int api_requests_in(pqxx::transaction_base& tx, const std::string& api, Millis interval) {
  return tx.exec_params(kRequestsIn, api, static_cast<long long>(interval.count()))[0][0].as<int>();
}

SyncStats sync_stats(pqxx::transaction_base& tx) {
  SyncStats s;
  for (const auto& r : tx.exec(kStats)) s.by_status[r[0].as<std::string>()] = r[1].as<long long>();
  s.oldest_pending_seconds = tx.exec(kOldestPending)[0][0].as<double>();
  return s;
}

std::optional<Millis> next_sync_due_in(pqxx::transaction_base& tx) {
  const pqxx::result r = tx.exec(kNextDue);
  if (r.empty() || r[0][0].is_null()) return std::nullopt;
  return Millis{r[0][0].as<long long>()};
}

std::vector<SyncJobView> list_sync_jobs(pqxx::transaction_base& tx,
                                        const std::vector<std::string>& statuses, int limit) {
  std::vector<SyncJobView> out;
  for (const auto& r : tx.exec_params(kList, to_json(statuses), limit)) {
    SyncJobView v;
    v.id = r[0].as<long long>();
    v.entity_type = r[1].as<std::string>();
    v.entity_id = r[2].as<std::string>();
    v.operation = r[3].as<std::string>();
    v.status = r[4].as<std::string>();
    v.attempts = r[5].as<int>();
    v.next_attempt_at = r[6].as<std::string>();
    v.updated_at = r[7].as<std::string>();
    v.last_error = opt(r[8]);
    out.push_back(std::move(v));
  }
  return out;
}

RedriveResult redrive_sync_jobs(pqxx::transaction_base& tx, std::optional<long long> id) {
  const std::string text = id ? std::to_string(*id) : std::string();
  const char* param = id ? text.c_str() : nullptr;
  // The entities' locks first, as the enqueue takes them: a request arriving
  // meanwhile either committed its pending job (this job is then superseded)
  // or waits and finds this one pending.
  std::vector<std::pair<std::string, std::string>> entities;
  for (const auto& row : tx.exec_params(kRedriveEntities, param)) {
    entities.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
  }
  lock_sync_entities(tx, entities);
  const pqxx::result r = tx.exec_params(kRedrive, param);
  RedriveResult out;
  out.redriven = r[0][0].as<int>();
  out.superseded = r[0][1].as<int>();
  return out;
}

}  // namespace crm::db
