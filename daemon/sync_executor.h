#pragma once
// The HubSpot sync executor: pushes sync_queue jobs to HubSpot and writes
// HubSpot's ids back (SPEC.md §5, §6; the queue's rules: db/sync.h).
//
// Runs on a thread of its own with its own database connection, in every
// instance; claims use FOR UPDATE SKIP LOCKED and a lease, so instances
// share the queue without a leader and a crashed one's jobs come back when
// its lease (hubspot.timeout + 5 s, renewed before every request) runs out.
//
// One pass = one claim of up to hubspot.batch_size jobs of one object type
// (companies first):
//   * upserts: the rows as they are now, one batch/upsert on the id
//     property (hubspot.id_property); then one v4 batch association with
//     the company for contacts and deals whose company link is new;
//   * deletes: batch/archive by HubSpot id (read by the id property first
//     when we do not know it);
//   * jobs in doubt (their last attempt may have reached HubSpot) are read
//     back first, and what HubSpot already holds is not pushed again;
//   * a batch refused with a 4xx is split in halves until the refused rows
//     are alone: they fail with HubSpot's error, the others are synced;
//   * 429, 5xx, timeouts and connection errors retry the jobs with
//     exponential backoff and full jitter, or after Retry-After; a 429
//     holds every instance.
// All outcomes of a pass are written in one transaction, bound to the claim.
//
// Every request first takes one unit of HubSpot's budget from the database
// (db::take_api_request): hubspot.requests_per_10s for all instances
// together, tightened by what HubSpot's X-HubSpot-RateLimit-* headers say
// (a lower Max, a shorter interval, or a Remaining that says other clients
// of the app are spending it).

#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/core/status.h"
#include "db/database.h"
#include "db/projections.h"
#include "db/sync.h"
#include "http/client.h"
#include "http/hubspot.h"
#include "monitoring/probes.h"

namespace crm {

struct SyncPass {
  int claimed = 0;
  int completed = 0;
  int retried = 0;
  int failed = 0;    // failed (4xx) or dead (out of attempts)
  int requests = 0;  // sent to HubSpot
  bool more = false;  // a claim was made: look again at once
};

class SyncExecutor {
 public:
  SyncExecutor(const Config& config, std::string conninfo, monitoring::Metrics& metrics,
               std::string instance);

  // Claims one batch and pushes it. Returns an empty pass when nothing is
  // due (or HubSpot's budget is held).
  Result<SyncPass> run_once();

  // Publishes the sync queue metrics.
  Status report();

  // Runs until `stop` is set; a batch in flight is finished or given back.
  void run(const std::atomic<bool>& stop);

 private:
  struct Pass;
  using Jobs = std::vector<const db::SyncJob*>;
  struct Sent {
    http::Response response;
    bool sent = false;  // false: every job was lost, or the executor is stopping
  };
  // One request for `jobs`, within the shared budget, after renewing the
  // claim's lease. Jobs found lost meanwhile are dropped from `jobs` and the
  // body is built again without them: a job another worker took over is
  // never pushed by this one.
  Sent call(Pass& pass, const std::string& path, Jobs& jobs,
            const std::function<std::string(const Jobs&)>& body);
  void learn_budget(const http::Response& response);
  void upsert(Pass& pass, const Jobs& jobs);
  void archive(Pass& pass, const Jobs& jobs);
  void push(Pass& pass, const std::string& type, Jobs jobs,
            const std::map<std::string, db::SyncRow>& rows);
  void associate(Pass& pass, const std::string& type, Jobs jobs,
                 const std::map<std::string, db::SyncRow>& rows);
  struct ReadBack {
    enum class Kind { kRead, kRefused, kRetried, kNotSent } kind = Kind::kNotSent;
    std::map<std::string, hubspot::Object> found;  // our id -> HubSpot's object
    http::Response response;
  };
  // Reads objects by our ids. kRetried: the jobs got their retry outcome.
  ReadBack read(Pass& pass, const std::string& type, Jobs jobs,
                const std::vector<std::string>& properties);
  // The answer was "try again later" (or none came): every job retries.
  void refused(Pass& pass, const Jobs& jobs, const http::Response& response);
  // A 4xx that says nothing about the rows (auth, scopes, the endpoint):
  // every job fails with it, and a token or scope problem pauses HubSpot.
  void refused_for_good(Pass& pass, const Jobs& jobs, const http::Response& response);
  Status record(Pass& pass);

  const Config& config_;
  db::Database db_;
  monitoring::Metrics& metrics_;
  std::string instance_;
  db::DealMapping deals_;
  db::ProjectionOptions projection_;
  http::Client http_;
  std::mt19937_64 rng_{std::random_device{}()};
  const std::atomic<bool>* stop_ = nullptr;
  // What HubSpot's headers said last (the app's window and how much of it
  // is ours to spend), as written to the shared slot row.
  std::optional<db::RateWindow> learned_;
  std::size_t next_type_ = 0;  // the entity type a claim starts with, rotating
};

}  // namespace crm
