// Command-line parsing and the small commands: version, check-config,
// migrate. The daemon itself is in run_command.cc, the dev broker in
// dev_broker_command.cc, dead letters in dlq_command.cc.

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <pqxx/pqxx>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "daemon/logging.h"
#include "db/database.h"
#include "db/migrations.h"

#include <chrono>

namespace crm {
namespace {

constexpr const char* kUsage = R"(crm-worker — the background engine of the sales CRM

Usage:
  crm-worker run [--config FILE]           run the daemon (applies migrations first)
  crm-worker migrate [--config FILE]       apply pending database migrations and exit
  crm-worker check-config [--config FILE]  validate the configuration and print the
                                           effective values, secrets masked
  crm-worker dev-broker [--brokers N] [--partitions P] [--port-file FILE]
                        [--control SOCKET] [--config FILE]
                                           run a local Kafka-protocol broker cluster
                                           for development and tests
  crm-worker dlq list [--limit N] [--all] [--config FILE]
                                           show dead letters (newest first)
  crm-worker dlq replay (--id ID | --all) [--config FILE]
                                           queue dead letters for the running daemon
                                           to apply again
  crm-worker followups list [--status S] [--limit N] [--config FILE]
                                           show follow-ups (default: failed, i.e.
                                           emails in doubt after a crash)
  crm-worker followups resolve --id ID (--sent | --not-sent) [--config FILE]
                                           record whether an in-doubt email went out;
                                           --not-sent sends it now
  crm-worker sync list [--status S|all] [--limit N] [--config FILE]
                                           show HubSpot sync jobs (default: failed
                                           and dead, with HubSpot's error)
  crm-worker sync redrive (--id JOB | --all) [--config FILE]
                                           make failed and dead sync jobs pending
                                           again
  crm-worker version                       version, git revision, library versions
  crm-worker help [COMMAND]                this text

Configuration: a TOML file (--config; /etc/crm-worker/crm-worker.toml under
systemd), overridden by CRM_WORKER_* environment variables; every key has a
default, so development needs no file. Secrets come only from the
environment or from systemd credentials. See deploy/crm-worker.toml.example.

Exit codes: 0 ok, 2 usage or configuration error, 1 anything else.
)";

}  // namespace

void print_usage(std::FILE* to) { std::fputs(kUsage, to); }

bool write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return false;
    out << text << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "crm-worker: %s\nRun 'crm-worker help' for usage.\n", message.c_str());
  return kExitUsage;
}

bool parse_options(const std::vector<std::string>& args, const std::vector<std::string>& valued,
                   const std::vector<std::string>& flags, Options* out, std::string* error) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    if (std::find(valued.begin(), valued.end(), a) != valued.end()) {
      if (!has_inline) {
        if (i + 1 >= args.size()) {
          *error = a + " needs a value";
          return false;
        }
        value = args[++i];
      }
      out->values[a] = value;
    } else if (std::find(flags.begin(), flags.end(), a) != flags.end() && !has_inline) {
      out->flags.insert(a);
    } else if (a.rfind("-", 0) == 0) {
      *error = "unknown option " + a;
      return false;
    } else {
      out->positional.push_back(a);
    }
  }
  return true;
}

std::optional<Config> load_config_or_report(const Options& opts) {
  std::string path;
  if (auto it = opts.values.find("--config"); it != opts.values.end()) path = it->second;
  ConfigLoadResult r = load_config(path, process_environment());
  if (!r.ok()) {
    for (const auto& e : r.errors) std::fprintf(stderr, "crm-worker: %s\n", e.to_string().c_str());
    return std::nullopt;
  }
  if (auto conninfo = db::build_conninfo(r.config.database.url, 1); !conninfo) {
    std::fprintf(stderr, "crm-worker: %s: %s\n",
                 r.config.source_file.c_str(), conninfo.status().message().c_str());
    return std::nullopt;
  }
  log::Level level;
  if (log::parse_level(r.config.log.level, &level)) log::set_level(level);
  log::set_json(r.config.log.format == "json");
  return r.config;
}

std::optional<long> limit_option(const Options& opts, long fallback) {
  auto it = opts.values.find("--limit");
  if (it == opts.values.end()) return fallback;
  long limit = 0;
  try {
    std::size_t used = 0;
    limit = std::stol(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("limit");
  } catch (...) {
    usage_error("--limit must be a number");
    return std::nullopt;
  }
  if (limit < 1 || limit > 100000) {
    usage_error("--limit must be from 1 to 100000");
    return std::nullopt;
  }
  return limit;
}

int run_database_subcommand(const std::vector<std::string>& args, const std::string& command,
                            std::vector<std::string> valued, const std::vector<std::string>& flags,
                            const std::vector<std::pair<std::string, DatabaseSubcommand>>& subcommands) {
  valued.push_back("--config");
  Options opts;
  std::string error;
  if (!parse_options(args, valued, flags, &opts, &error)) return usage_error(error);
  std::string names;
  const DatabaseSubcommand* chosen = nullptr;
  for (const auto& [name, body] : subcommands) {
    names += (names.empty() ? "" : " or ") + name;
    if (opts.positional.size() == 1 && opts.positional[0] == name) chosen = &body;
  }
  if (chosen == nullptr) return usage_error(command + " needs a subcommand: " + names);
  auto config = load_config_or_report(opts);
  if (!config) return kExitUsage;
  return with_database(*config, [&](pqxx::connection& conn) { return (*chosen)(conn, *config, opts); });
}

int with_database(const Config& config, const std::function<int(pqxx::connection&)>& body) {
  try {
    pqxx::connection conn(database_conninfo(config));
    return body(conn);
  } catch (const pqxx::broken_connection& e) {
    std::fprintf(stderr, "crm-worker: cannot connect to the database %s: %s\n",
                 mask_database_url(config.database.url).c_str(), e.what());
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crm-worker: %s\n", e.what());
    return kExitFailure;
  }
}

std::string database_conninfo(const Config& config) {
  // The password credential, when present, goes through libpq's
  // environment variable so that it never appears in a connection string.
  // Called before any thread starts (setenv is not thread-safe).
  if (config.database.password.is_set()) {
    ::setenv("PGPASSWORD", config.database.password.reveal().c_str(), 1);
  }
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(config.database.connect_timeout);
  auto conninfo = db::build_conninfo(config.database.url, static_cast<int>(seconds.count()));
  // load_config_or_report already refused an unparsable URL.
  return conninfo ? *conninfo : config.database.url;
}

int command_version(const std::vector<std::string>&) {
  std::printf("crm-worker %s (revision %s)\n", CRM_WORKER_VERSION, CRM_WORKER_REVISION);
  std::printf("librdkafka %s\n", rd_kafka_version_str());
  std::printf("libpqxx %s\n", PQXX_VERSION);
  std::printf("libpq %d\n", PQlibVersion());
  return kExitOk;
}

int command_check_config(const std::vector<std::string>& args) {
  Options opts;
  std::string error;
  if (!parse_options(args, {"--config"}, {}, &opts, &error)) return usage_error(error);
  if (!opts.positional.empty()) return usage_error("check-config takes no arguments");
  auto config = load_config_or_report(opts);
  if (!config) return kExitUsage;
  std::fputs(render_effective(*config).c_str(), stdout);
  std::fprintf(stderr, "crm-worker: configuration OK (%s)\n", config->source_file.c_str());
  return kExitOk;
}

int command_migrate(const std::vector<std::string>& args) {
  Options opts;
  std::string error;
  if (!parse_options(args, {"--config"}, {}, &opts, &error)) return usage_error(error);
  if (!opts.positional.empty()) return usage_error("migrate takes no arguments");
  auto config = load_config_or_report(opts);
  if (!config) return kExitUsage;
  try {
    pqxx::connection conn(database_conninfo(*config));
    auto report = db::apply_migrations(conn, db::embedded_migrations());
    if (!report) {
      log::error("migration failed", {{"error", report.status().message()}});
      return kExitFailure;
    }
    log::info("database schema up to date", {{"applied", report->applied},
                                              {"version", report->current_version}});
    return kExitOk;
  } catch (const std::exception& e) {
    log::error("cannot connect to the database",
               {{"database", mask_database_url(config->database.url)}, {"error", e.what()}});
    return kExitFailure;
  }
}

int cli_main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(stderr);
    return kExitUsage;
  }
  std::string cmd = args.front();
  std::vector<std::string> rest(args.begin() + 1, args.end());
  bool wants_help = std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
                    std::find(rest.begin(), rest.end(), "-h") != rest.end();
  if (cmd == "help" || cmd == "--help" || cmd == "-h" || wants_help) {
    print_usage(stdout);
    return kExitOk;
  }
  if (cmd == "run") return command_run(rest);
  if (cmd == "migrate") return command_migrate(rest);
  if (cmd == "check-config") return command_check_config(rest);
  if (cmd == "dev-broker") return command_dev_broker(rest);
  if (cmd == "dlq") return command_dlq(rest);
  if (cmd == "followups") return command_followups(rest);
  if (cmd == "sync") return command_sync(rest);
  if (cmd == "version" || cmd == "--version") return command_version(rest);
  return usage_error("unknown command '" + cmd + "'");
}

}  // namespace crm
