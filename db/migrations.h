#pragma once
// Schema migrations: numbered SQL files in db/migrations/, compiled into the
// binary (cmake/embed_migrations.cmake), applied in order and recorded in
// schema_migrations. Safe to run from several processes at once: the whole
// run holds a session advisory lock, and each migration commits in its own
// transaction together with its schema_migrations row.
//
// Called by `crm-worker migrate` and at the start of `crm-worker run`, on the
// main thread, before anything else touches the database.

#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/core/status.h"

namespace crm::db {

struct Migration {
  int version;
  std::string name;
  std::string sql;
};

// All migrations compiled into this binary, in version order.
const std::vector<Migration>& embedded_migrations();

struct MigrationReport {
  int applied = 0;         // how many this call applied
  int current_version = 0; // highest version recorded after the call
};

// Applies every migration not yet recorded. Fails (kFatal) if the database
// records a version this binary does not know, or a recorded migration's
// checksum differs from the embedded one (someone edited a released file).
// Connection errors are kTransient.
Result<MigrationReport> apply_migrations(pqxx::connection& conn,
                                         const std::vector<Migration>& migrations);

}  // namespace crm::db
