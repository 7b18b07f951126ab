// `crm-worker sync list` and `crm-worker sync redrive`: the HubSpot sync
// jobs HubSpot refused (`failed`: a 4xx, the error kept) or that ran out of
// attempts (`dead`) wait for an operator. After fixing the cause (the row,
// a HubSpot property, the token), redrive makes them pending again; a
// running crm-worker pushes them at once.

#include <pqxx/pqxx>

#include <algorithm>
#include <cstdio>
#include <iterator>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "db/sync.h"

namespace crm {
namespace {

int sync_list(pqxx::connection& conn, const Options& opts) {
  std::vector<std::string> statuses{"failed", "dead"};
  if (auto it = opts.values.find("--status"); it != opts.values.end()) {
    static const char* kStatuses[] = {"pending", "in_progress", "completed", "failed", "dead"};
    if (it->second == "all") {
      statuses.clear();
    } else if (std::find(std::begin(kStatuses), std::end(kStatuses), it->second) != std::end(kStatuses)) {
      statuses = {it->second};
    } else {
      return usage_error("--status must be one of pending, in_progress, completed, failed, dead, all");
    }
  }
  const std::optional<long> limit = limit_option(opts, 50);
  if (!limit) return kExitUsage;
  pqxx::work tx(conn);
  const auto jobs = db::list_sync_jobs(tx, statuses, static_cast<int>(*limit));
  std::printf("%-8s %-8s %-24s %-7s %-12s %3s %-20s %s\n", "JOB", "TYPE", "ENTITY", "OP", "STATUS",
              "TRY", "UPDATED", "LAST ERROR");
  for (const auto& j : jobs) {
    std::printf("%-8lld %-8s %-24s %-7s %-12s %3d %-20s %s\n", j.id, j.entity_type.c_str(),
                j.entity_id.c_str(), j.operation.c_str(), j.status.c_str(), j.attempts,
                j.updated_at.c_str(), j.last_error.value_or("").c_str());
  }
  std::printf("%zu job(s)\n", jobs.size());
  return kExitOk;
}

int sync_redrive(pqxx::connection& conn, const Options& opts) {
  const auto id = opts.values.find("--id");
  const bool all = opts.flags.count("--all") != 0;
  if ((id == opts.values.end()) == !all) {
    return usage_error("sync redrive needs exactly one of --id JOB or --all");
  }
  std::optional<long long> job;
  if (!all) {
    try {
      std::size_t used = 0;
      job = std::stoll(id->second, &used);
      if (used != id->second.size() || *job < 1) throw std::invalid_argument("id");
    } catch (...) {
      return usage_error("--id must be a job number (see `crm-worker sync list`)");
    }
  }
  pqxx::work tx(conn);
  const db::RedriveResult r = db::redrive_sync_jobs(tx, job);
  tx.commit();
  if (job && r.redriven == 0 && r.superseded == 0) {
    std::fprintf(stderr, "crm-worker: sync job %lld is not failed or dead; nothing done\n", *job);
    return kExitFailure;
  }
  std::printf("%d job(s) pending again; a running crm-worker pushes them now\n", r.redriven);
  if (r.superseded > 0) {
    std::printf("%d job(s) left alone: a newer job of the same entity exists and pushes its "
                "current state\n",
                r.superseded);
  }
  return kExitOk;
}

}  // namespace

int command_sync(const std::vector<std::string>& args) {
  return run_database_subcommand(
      args, "sync", {"--id", "--status", "--limit"}, {"--all"},
      {{"list", [](pqxx::connection& conn, const Config&, const Options& opts) { return sync_list(conn, opts); }},
       {"redrive", [](pqxx::connection& conn, const Config&, const Options& opts) { return sync_redrive(conn, opts); }}});
}

}  // namespace crm
