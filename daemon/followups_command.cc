// `crm-worker followups list` and `crm-worker followups resolve`: what an
// operator needs for follow-up emails left in doubt (status `failed`: the
// worker died between claiming the email and recording SendGrid's answer,
// or SendGrid never answered). They are never sent again automatically; the
// operator looks the email up in SendGrid (custom arg followup_id) and
// records the verdict here.

#include <pqxx/pqxx>

#include <algorithm>
#include <cstdio>
#include <iterator>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "daemon/followup_executor.h"
#include "db/followups.h"

namespace crm {
namespace {

int followups_list(pqxx::connection& conn, const Options& opts) {
  std::string status = "failed";
  if (auto it = opts.values.find("--status"); it != opts.values.end()) status = it->second;
  static const char* kStatuses[] = {"scheduled", "sending", "sent", "cancelled", "failed", "dead"};
  if (std::find(std::begin(kStatuses), std::end(kStatuses), status) == std::end(kStatuses)) {
    return usage_error("--status must be one of scheduled, sending, sent, cancelled, failed, dead");
  }
  const std::optional<long> limit = limit_option(opts, 50);
  if (!limit) return kExitUsage;
  pqxx::work tx(conn);
  const pqxx::result r = tx.exec_params(
      "SELECT id, kind, coalesce(prospect_id, ''),"
      "  to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), attempts,"
      "  coalesce(cancel_reason, last_error, '')"
      " FROM followups WHERE status = $1 ORDER BY due_at, id LIMIT $2",
      status, *limit);
  std::printf("%-36s %-13s %-20s %-20s %3s %s\n", "ID", "KIND", "PROSPECT", "DUE", "TRY", "NOTE");
  for (const auto& row : r) {
    std::printf("%-36s %-13s %-20s %-20s %3d %s\n", row[0].c_str(), row[1].c_str(), row[2].c_str(),
                row[3].c_str(), row[4].as<int>(), row[5].c_str());
  }
  std::printf("%zu follow-up(s) %s%s\n", r.size(), status.c_str(),
              status == "failed" ? " (in doubt: check SendGrid, then `followups resolve`)" : "");
  return kExitOk;
}

int followups_resolve(pqxx::connection& conn, const Config& config, const Options& opts) {
  const auto id = opts.values.find("--id");
  const bool sent = opts.flags.count("--sent") != 0;
  const bool not_sent = opts.flags.count("--not-sent") != 0;
  if (id == opts.values.end() || sent == not_sent) {
    return usage_error("followups resolve needs --id ID and exactly one of --sent or --not-sent");
  }
  pqxx::work tx(conn);
  const std::optional<db::ClaimedFollowup> f = db::find_in_doubt(tx, id->second);
  if (!f) {
    std::fprintf(stderr, "crm-worker: follow-up %s is not in doubt (no row with status failed)\n",
                 id->second.c_str());
    return kExitFailure;
  }
  // It went out: it is an email like any other (counted, next step
  // scheduled). Recorded before the row is touched: the projection's locks
  // first, the order every event's transaction takes them in.
  if (sent) record_followup_email(tx, followup_sent_event(*f, std::nullopt), db::projection_options(config));
  if (!db::resolve_in_doubt(tx, id->second, sent)) {
    std::fprintf(stderr, "crm-worker: follow-up %s changed meanwhile; nothing done\n", id->second.c_str());
    return kExitFailure;  // the transaction is rolled back
  }
  tx.commit();
  std::printf(sent ? "follow-up %s recorded as sent\n"
                   : "follow-up %s scheduled again; a running crm-worker sends it now\n",
              id->second.c_str());
  return kExitOk;
}

}  // namespace

int command_followups(const std::vector<std::string>& args) {
  return run_database_subcommand(
      args, "followups", {"--id", "--status", "--limit"}, {"--sent", "--not-sent"},
      {{"list", [](pqxx::connection& conn, const Config&, const Options& opts) { return followups_list(conn, opts); }},
       {"resolve", followups_resolve}});
}

}  // namespace crm
