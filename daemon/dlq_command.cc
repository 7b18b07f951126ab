// `crm-worker dlq list` and `crm-worker dlq replay`.
//
// Replay does not apply anything itself: it marks dead letters as requested
// (replay_requested_at), and a running daemon claims them with FOR UPDATE
// SKIP LOCKED and applies them through the same path as Kafka messages, in
// one transaction with marking them replayed. That works whatever the
// broker (embedded or remote), survives restarts, and cannot apply one
// twice: processed_events still guards every event id.

#include <pqxx/pqxx>

#include <cstdio>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "daemon/logging.h"

namespace crm {
namespace {

std::string one_line(std::string s, size_t max) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

int dlq_list(pqxx::connection& conn, const Options& opts) {
  const std::optional<long> limit = limit_option(opts, 50);
  if (!limit) return kExitUsage;
  bool all = opts.flags.count("--all") != 0;
  pqxx::work tx(conn);
  pqxx::result r = tx.exec_params(
      "SELECT id, reason, coalesce(event_type, ''), attempts,"
      "  to_char(first_failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
      "  CASE WHEN replayed_at IS NOT NULL THEN 'replayed'"
      "       WHEN replay_requested_at IS NOT NULL THEN 'replay-queued'"
      "       ELSE 'dead' END, error"
      " FROM dead_letters WHERE $1 OR replayed_at IS NULL"
      " ORDER BY first_failed_at DESC, id LIMIT $2",
      all, *limit);
  std::printf("%-40s %-16s %-13s %-24s %3s %-20s %s\n", "ID", "REASON", "STATE", "TYPE", "TRY",
              "FIRST FAILED", "ERROR");
  for (const auto& row : r) {
    std::printf("%-40s %-16s %-13s %-24s %3d %-20s %s\n", row[0].c_str(), row[1].c_str(),
                row[5].c_str(), one_line(row[2].c_str(), 24).c_str(), row[3].as<int>(),
                row[4].c_str(), one_line(row[6].c_str(), 100).c_str());
  }
  std::printf("%zu dead letter(s)%s\n", r.size(), all ? "" : " not yet replayed");
  return kExitOk;
}

int dlq_replay(pqxx::connection& conn, const Options& opts) {
  bool all = opts.flags.count("--all") != 0;
  auto id = opts.values.find("--id");
  if (all == (id != opts.values.end())) return usage_error("dlq replay needs exactly one of --id ID or --all");
  pqxx::work tx(conn);
  pqxx::result r;
  if (all) {
    r = tx.exec(
        "UPDATE dead_letters SET replay_requested_at = now()"
        " WHERE replayed_at IS NULL AND replay_requested_at IS NULL");
  } else {
    r = tx.exec_params(
        "UPDATE dead_letters SET replay_requested_at = now()"
        " WHERE id = $1 AND replayed_at IS NULL AND replay_requested_at IS NULL",
        id->second);
    if (r.affected_rows() == 0) {
      pqxx::result s = tx.exec_params(
          "SELECT replayed_at IS NOT NULL, replay_requested_at IS NOT NULL FROM dead_letters"
          " WHERE id = $1",
          id->second);
      if (s.empty()) {
        std::fprintf(stderr, "crm-worker: no dead letter with id %s\n", id->second.c_str());
      } else if (s[0][0].as<bool>()) {
        std::fprintf(stderr, "crm-worker: dead letter %s was already replayed\n", id->second.c_str());
      } else {
        std::fprintf(stderr, "crm-worker: dead letter %s is already queued for replay\n", id->second.c_str());
      }
      return kExitFailure;
    }
  }
  tx.commit();
  std::printf("%zu dead letter(s) queued for replay; a running crm-worker applies them within seconds\n",
              static_cast<size_t>(r.affected_rows()));
  return kExitOk;
}

}  // namespace

int command_dlq(const std::vector<std::string>& args) {
  return run_database_subcommand(
      args, "dlq", {"--id", "--limit"}, {"--all"},
      {{"list", [](pqxx::connection& conn, const Config&, const Options& opts) { return dlq_list(conn, opts); }},
       {"replay", [](pqxx::connection& conn, const Config&, const Options& opts) { return dlq_replay(conn, opts); }}});
}

}  // namespace crm
