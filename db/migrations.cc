#include "db/migrations.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string_view>
#include <utility>

namespace crm::db {
namespace {

// Session advisory lock key serialising every migration run against one
// database, from any crm-worker version: it must never change. ASCII
// "crm-migr", so it is recognisable in pg_locks (classid 0x63726d2d,
// objid 0x6d696772).
constexpr std::int64_t kMigrationLockKey = 0x63726d2d6d696772;

// Created by the runner rather than by 0001 because it must exist before any
// migration runs.
constexpr const char* kCreateSchemaMigrations =
    "CREATE TABLE schema_migrations ("
    " version int PRIMARY KEY,"
    " name text NOT NULL,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

// FNV-1a 64, lower-case hex. Stable across compilers and platforms (unlike
// std::hash), and only has to notice an edited file, not resist an attacker.
std::string checksum(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// Server messages span lines ("ERROR: ...\nLINE 3: ..."); errors reach the
// log as one line.
std::string one_line(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

// Releases the session advisory lock however apply_migrations leaves. If the
// connection broke, the server already dropped the lock with the session, and
// touching the connection would only make libpqxx 6 try to reconnect.
class MigrationLockGuard {
 public:
  explicit MigrationLockGuard(pqxx::connection& conn) : conn_(conn) {}
  MigrationLockGuard(const MigrationLockGuard&) = delete;
  MigrationLockGuard& operator=(const MigrationLockGuard&) = delete;
  ~MigrationLockGuard() {
    if (!conn_.is_open()) return;
    try {
      pqxx::nontransaction tx(conn_, "migration_unlock");
      tx.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    } catch (...) {  // NOLINT(bugprone-empty-catch)
      // Nothing useful to do: the lock goes away with the session at the
      // latest, and the caller already has the error that brought us here.
    }
  }

 private:
  pqxx::connection& conn_;
};

struct Recorded {
  std::string name;
  std::string checksum;
};

// Transient SQLSTATEs a migration can meet on a healthy database: the server
// shutting down or out of resources, a deadlock with a running worker, a
// lock_timeout set by the operator. Anything else is a bug in a migration or
// in the database's state, and retrying would fail the same way.
bool is_transient_sqlstate(const std::string& state) {
  if (state.size() != 5) return false;
  const std::string_view cls(state.data(), 2);
  return cls == "08" || cls == "40" || cls == "53" || cls == "57" || state == "55P03";
}

}  // namespace

Result<MigrationReport> apply_migrations(pqxx::connection& conn,
                                         const std::vector<Migration>& migrations) {
  // The list is compiled in; a gap in ordering would mean a broken build.
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version <= 0 ||
        (i > 0 && migrations[i].version <= migrations[i - 1].version)) {
      return Status::fatal("bad_migrations",
                           "embedded migrations are not in strictly increasing version order at " +
                               std::to_string(migrations[i].version) + " (" +
                               migrations[i].name + ")");
    }
  }

  MigrationReport report;
  // What we were doing, for the error message; never the connection string.
  std::string step = "taking the migration lock";
  try {
    {
      // Waits for any other instance migrating the same database. A session
      // lock, not a transaction one, because each migration commits on its own.
      pqxx::nontransaction tx(conn, "migration_lock");
      tx.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
    }
    MigrationLockGuard unlock(conn);

    std::map<int, Recorded> recorded;
    {
      step = "reading schema_migrations";
      pqxx::work tx(conn, "migration_state");
      // Probe first instead of CREATE TABLE IF NOT EXISTS: the runtime role
      // has no CREATE privilege, and `run` must still start with it once the
      // schema is current.
      const bool present =
          tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", "schema_migrations")[0].as<bool>();
      if (!present) {
        step = "creating schema_migrations";
        tx.exec_params(kCreateSchemaMigrations);
      }
      step = "reading schema_migrations";
      for (const auto& row :
           tx.exec_params("SELECT version, name, checksum FROM schema_migrations ORDER BY version")) {
        recorded[row[0].as<int>()] = Recorded{row[1].as<std::string>(), row[2].as<std::string>()};
      }
      tx.commit();
    }

    const int newest_known = migrations.empty() ? 0 : migrations.back().version;
    for (const auto& [version, rec] : recorded) {
      const auto it = std::find_if(migrations.begin(), migrations.end(),
                                   [v = version](const Migration& m) { return m.version == v; });
      if (it == migrations.end()) {
        return Status::fatal(
            "unknown_migration",
            "database records migration " + std::to_string(version) + " (" + rec.name +
                ") which this binary does not have (newest known: " +
                std::to_string(newest_known) +
                "); the database was migrated by a newer crm-worker, refusing to run on it");
      }
      if (rec.checksum != checksum(it->sql)) {
        return Status::fatal(
            "migration_checksum_mismatch",
            "migration " + std::to_string(version) + " (" + it->name + ") was applied with checksum " +
                rec.checksum + " but this binary's copy has " + checksum(it->sql) +
                "; a released migration file was edited");
      }
      report.current_version = std::max(report.current_version, version);
    }

    for (const auto& m : migrations) {
      if (recorded.count(m.version) != 0) continue;
      step = "applying migration " + std::to_string(m.version) + " (" + m.name + ")";
      pqxx::work tx(conn, "migration");
      // libpqxx 6 silently reconnects a broken connection when the next
      // transaction begins, and the new session does not hold our lock.
      // Checking inside this transaction closes that window for good.
      const bool locked =
          tx.exec_params1(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                " AND classid = ($1::bigint >> 32)::oid"
                " AND objid = ($1::bigint & 4294967295)::oid)",
                kMigrationLockKey)[0]
              .as<bool>();
      if (!locked) {
        return Status::transient("migration_lock_lost",
                                 "the database connection was reset while migrating; " + step +
                                     " not started, will retry");
      }
      // Plain exec (simple query protocol) because a migration file holds many
      // statements; the extended protocol behind exec_params allows only one.
      tx.exec(m.sql, "migration " + std::to_string(m.version));
      tx.exec_params("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     m.version, m.name, checksum(m.sql));
      tx.commit();
      ++report.applied;
      report.current_version = std::max(report.current_version, m.version);
    }
    return report;
  } catch (const pqxx::broken_connection& e) {
    return Status::transient("database_unavailable", step + ": " + one_line(e.what()));
  } catch (const pqxx::in_doubt_error& e) {
    // The connection broke during COMMIT. Safe to retry: a migration commits
    // atomically with its schema_migrations row, so the next run sees it
    // either recorded (and skips it) or not applied at all.
    return Status::transient("database_unavailable",
                             step + ": commit outcome unknown: " + one_line(e.what()));
  } catch (const pqxx::transaction_rollback& e) {
    // Serialization failure or deadlock (e.g. with a running worker holding
    // a table lock): nothing was committed, the next run retries cleanly.
    return Status::transient("database_conflict", step + ": " + one_line(e.what()));
  } catch (const pqxx::sql_error& e) {
    std::string message = step + " failed: " + one_line(e.what());
    if (!e.sqlstate().empty()) message += " (SQLSTATE " + e.sqlstate() + ")";
    if (is_transient_sqlstate(e.sqlstate())) {
      return Status::transient("database_unavailable", std::move(message));
    }
    return Status::fatal("migration_failed", std::move(message));
  } catch (const std::exception& e) {
    return Status::fatal("migration_failed", step + " failed: " + one_line(e.what()));
  }
}

}  // namespace crm::db
