#pragma once
// Helpers shared by the subcommands: option parsing, configuration loading
// with error reporting, usage errors.

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/config.h"

namespace crm {

struct Options {
  std::map<std::string, std::string> values;  // "--config" → "file"
  std::set<std::string> flags;                // "--all"
  std::vector<std::string> positional;
};

// Accepts "--name value" and "--name=value" for `valued`, bare `flags`.
bool parse_options(const std::vector<std::string>& args, const std::vector<std::string>& valued,
                   const std::vector<std::string>& flags, Options* out, std::string* error);

// Loads the configuration named by --config (or defaults + environment),
// printing every error on stderr. Also applies the log settings.
std::optional<Config> load_config_or_report(const Options& opts);

// The libpq connection string for the configuration.
std::string database_conninfo(const Config& config);

// Connects to the configured database and runs `body`; a failure to connect
// or an exception becomes one line on stderr (the URL masked) and exit 1.
int with_database(const Config& config, const std::function<int(pqxx::connection&)>& body);

// --limit N (1..100000), or `fallback` when absent; nullopt after printing
// a usage error.
std::optional<long> limit_option(const Options& opts, long fallback);

// `crm-worker <command> <subcommand> ...` for the operator commands that work
// on the database (dlq, followups, sync): parses the options (--config is
// always accepted), checks the subcommand, loads the configuration and runs
// the subcommand on a connection. Returns the exit code.
using DatabaseSubcommand = std::function<int(pqxx::connection&, const Config&, const Options&)>;
int run_database_subcommand(const std::vector<std::string>& args, const std::string& command,
                            std::vector<std::string> valued, const std::vector<std::string>& flags,
                            const std::vector<std::pair<std::string, DatabaseSubcommand>>& subcommands);

// Writes `text` and a newline to `path` atomically (write a temporary file,
// rename it), so a reader polling for the file never sees half of it.
bool write_file_atomically(const std::string& path, const std::string& text);

// Prints "crm-worker: <message>" and returns the usage exit code.
int usage_error(const std::string& message);
void print_usage(std::FILE* to);

}  // namespace crm
