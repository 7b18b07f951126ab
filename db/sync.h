#pragma once
// The HubSpot sync queue as the executor sees it (SPEC.md §5 `sync_queue`,
// §6 HubSpot): claim due jobs, read the rows they push, record how each
// ended, and share HubSpot's request budget between instances.
//
//   pending ──claim──► in_progress ──pushed──► completed
//      ▲                  │  ├─ retryable (429, 5xx, timeout, not sent) ─► pending (later)
//      │                  │  ├─ refused for good (other 4xx) ─► failed
//      │                  │  └─ out of attempts ─► dead
//      │                  └─ lease expired (the worker died) ─► claimed again, in doubt
//      └──── `crm-worker sync redrive` (failed, dead)
//
// One job per entity is in flight at a time (a newer request waits as a
// pending job and is pushed after), and a deal or contact waits while its
// company has an unfinished job, so a company reaches HubSpot first. A job
// pushes the row as it is when pushed, not as it was when requested.
//
// A claim is (lease_owner, claimed_at): every outcome and lease renewal
// applies only to jobs still held by that claim. Every function runs inside
// the caller's transaction.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/core/time.h"

namespace crm::db {

struct SyncJob {
  long long id = 0;
  std::string entity_type;  // company, contact, deal
  std::string entity_id;
  std::string operation;    // upsert, delete
  int attempts = 0;         // this one included
  // The last attempt may have reached HubSpot unrecorded: read before pushing.
  bool in_doubt = false;
  long long claim = 0;      // the claim's token: claimed_at in epoch microseconds
};

// The object types in the order they are pushed.
const std::vector<std::string>& sync_entity_types();

// Claims up to `limit` due jobs of one entity type, FOR UPDATE SKIP LOCKED:
// the first type, from sync_entity_types()[first_type] on round, that has
// any (executors rotate, so no type starves another). Jobs whose lease
// expired are claimed again, in doubt, or are `dead` when that was their
// last attempt (a job that kills its worker every time must end).
std::vector<SyncJob> claim_sync_jobs(pqxx::transaction_base& tx, const std::string& owner,
                                     Millis lease, int limit, int max_attempts,
                                     std::size_t first_type = 0);

// For deals and contacts about to be pushed whose company is not in
// HubSpot: the companies that are on their way (a job of theirs is pending
// or in flight, or none ever existed and one is queued now). The others
// had their sync fail; their deals and contacts go without association.
std::set<std::string> companies_on_their_way(pqxx::transaction_base& tx,
                                             const std::vector<std::string>& company_ids);

// Extends the lease of the jobs this claim still holds; returns their ids.
std::vector<long long> renew_sync_leases(pqxx::transaction_base& tx, const std::string& owner,
                                         const std::vector<SyncJob>& jobs, Millis lease);

// Gives claimed jobs back untouched (shutting down before pushing them):
// pending, due now, the attempt not counted.
void release_sync_jobs(pqxx::transaction_base& tx, const std::string& owner,
                       const std::vector<SyncJob>& jobs);

// One row to push: HubSpot property -> value (nullopt: clear it), as our
// columns hold them now.
struct SyncRow {
  std::string id;
  std::map<std::string, std::optional<std::string>> properties;
  std::optional<std::string> hubspot_id;
  std::optional<std::string> company_id;
  std::optional<std::string> company_hubspot_id;  // for the association
  std::optional<std::string> linked_company_hubspot_id;  // the association made last
};

struct DealMapping {
  std::string pipeline = "default";
  std::map<std::string, std::string> stages;  // our stage -> HubSpot's id
};

// The rows of these entities that exist (missing ones are absent).
std::map<std::string, SyncRow> load_sync_rows(pqxx::transaction_base& tx,
                                              const std::string& entity_type,
                                              const std::vector<std::string>& ids,
                                              const DealMapping& deals);
// The HubSpot ids we know for these entities (rows deleted by the web app
// are absent).
std::map<std::string, std::string> known_hubspot_ids(pqxx::transaction_base& tx,
                                                     const std::string& entity_type,
                                                     const std::vector<std::string>& ids);

// How one claimed job ended.
struct SyncOutcome {
  enum class Kind { kCompleted, kRetry, kFailed };
  const SyncJob* job = nullptr;
  Kind kind = Kind::kCompleted;
  std::string error;                         // kept in last_error (also on success: a note)
  Millis delay{0};                           // kRetry: not before this
  bool in_doubt = false;                     // kRetry: HubSpot may have acted
  std::optional<std::string> hubspot_id;     // written back when set
  std::optional<std::string> linked_company;  // the association just made
  // The entity row's hubspot_sync_status (synced, archived, failed); unset:
  // the row is left as it is.
  std::optional<std::string> row_status;
  // kRetry: the attempt does not count (HubSpot refused to look at it: 429).
  bool refund_attempt = false;
};

// Writes the outcomes of jobs this claim still holds, and the rows'
// HubSpot ids and sync columns with them, in one statement. A retry past
// `max_attempts` ends `dead`. A job going back to `pending` absorbs a newer
// pending request of its entity (one pending job per entity), under the
// entity's advisory lock, which the enqueue takes too. Returns the ids of
// the jobs written; the others were taken over meanwhile and are left alone.
std::vector<long long> record_sync_outcomes(pqxx::transaction_base& tx, const std::string& owner,
                                            const std::vector<SyncOutcome>& outcomes,
                                            int max_attempts);

// A rolling window of an API's budget: at most `max` requests in `interval`.
struct RateWindow {
  int max = 0;
  Millis interval{0};
};

// Takes one request of `api`'s budget, shared by every instance. The
// windows are `windows` plus the one the API itself announced (set_api_window),
// each widened by `margin`; the api's slot must be free. `wait` is set when
// the request must wait; otherwise it is counted now as `request`, and
// api_request_answered() moves it to when the answer came, so the window
// holds it from no earlier than the API saw it.
struct ApiTake {
  std::optional<Millis> wait;
  long long request = 0;
};
ApiTake take_api_request(pqxx::transaction_base& tx, const std::string& api,
                         const std::vector<RateWindow>& windows, Millis margin);
void api_request_answered(pqxx::transaction_base& tx, long long request);
// The window the API announced (HubSpot's X-HubSpot-RateLimit-* headers),
// shared by every instance through the api's slot row.
void set_api_window(pqxx::transaction_base& tx, const std::string& api, const RateWindow& window);
std::optional<RateWindow> api_window(pqxx::transaction_base& tx, const std::string& api);
// How long until `api`'s held slot frees (zero when it is free).
Millis api_slot_wait(pqxx::transaction_base& tx, const std::string& api);
// Requests counted for `api` in the last `interval`.
int api_requests_in(pqxx::transaction_base& tx, const std::string& api, Millis interval);

struct SyncStats {
  std::map<std::string, long long> by_status;
  double oldest_pending_seconds = 0;
};
SyncStats sync_stats(pqxx::transaction_base& tx);

// Time until the next pending job is due (zero or negative: now), nullopt
// when none waits. Expired leases count as due.
std::optional<Millis> next_sync_due_in(pqxx::transaction_base& tx);

// Operator tools. `statuses` empty = all.
struct SyncJobView {
  long long id = 0;
  std::string entity_type, entity_id, operation, status;
  int attempts = 0;
  std::string next_attempt_at, updated_at;
  std::optional<std::string> last_error;
};
std::vector<SyncJobView> list_sync_jobs(pqxx::transaction_base& tx,
                                        const std::vector<std::string>& statuses, int limit);

struct RedriveResult {
  int redriven = 0;    // pending again, due now, attempts reset
  int superseded = 0;  // left alone: a newer job of the entity is pending
};
// Failed and dead jobs (all of them, or one id) become pending again.
RedriveResult redrive_sync_jobs(pqxx::transaction_base& tx, std::optional<long long> id);

}  // namespace crm::db
