// The migration runner against a real PostgreSQL: the schema of SPEC §5 is
// created, runs are idempotent and safe to race, and a database that does
// not match this binary's migrations stops the worker instead of being
// written to. Each test gets its own freshly created database.
//
// Needs CRM_TEST_PG_DIR: a directory made by `scripts/pg.sh start DIR`.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "db/migrations.h"

namespace crm::db {
namespace {

std::string random_suffix() {
  std::random_device rd;
  std::ostringstream out;
  out << std::hex << rd() << rd();
  return out.str();
}

// The superuser conninfo pg.sh wrote, e.g.
// "host=/tmp/pg port=5433 user=postgres dbname=postgres".
std::string cluster_conninfo() {
  const char* dir = std::getenv("CRM_TEST_PG_DIR");
  if (dir == nullptr || *dir == '\0') {
    ADD_FAILURE() << "CRM_TEST_PG_DIR is not set; run `scripts/pg.sh start DIR` "
                     "and set CRM_TEST_PG_DIR=DIR";
    return {};
  }
  std::ifstream in(std::string(dir) + "/conninfo");
  std::string line;
  if (!std::getline(in, line)) {
    ADD_FAILURE() << "cannot read " << dir << "/conninfo; is the cluster started?";
  }
  return line;
}

// pg.sh writes plain key=value words (it refuses paths needing quotes), so
// replacing a keyword is a word substitution.
std::string with_keyword(const std::string& conninfo, const std::string& key,
                         const std::string& value) {
  std::istringstream words(conninfo);
  std::string word, out;
  while (words >> word) {
    if (word.rfind(key + "=", 0) == 0) continue;
    out += word + " ";
  }
  return out + key + "=" + value;
}

struct Column {
  std::string type;
  bool nullable;
  std::string default_value;
};

class MigrationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    admin_conninfo_ = cluster_conninfo();
    ASSERT_FALSE(admin_conninfo_.empty());
    db_name_ = "crm_migrations_" + random_suffix();
    pqxx::connection admin(admin_conninfo_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(db_name_));
    created_ = true;
  }

  void TearDown() override {
    pqxx::connection admin(admin_conninfo_);
    pqxx::nontransaction tx(admin);
    if (created_) tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(db_name_) + " WITH (FORCE)");
    for (const auto& role : roles_) tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(role));
  }

  std::string conninfo(const std::string& user = {}) const {
    std::string c = with_keyword(admin_conninfo_, "dbname", db_name_);
    return user.empty() ? c : with_keyword(c, "user", user);
  }

  // A login role without CREATE on the schema, like the runtime role of a
  // deployment. Roles are cluster-wide, hence the random name.
  std::string create_runtime_role() {
    const std::string role = "crm_runtime_" + random_suffix();
    pqxx::connection admin(admin_conninfo_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE ROLE " + tx.quote_name(role) + " LOGIN");
    roles_.push_back(role);
    return role;
  }

  std::map<std::string, std::map<std::string, Column>> columns() {
    pqxx::connection conn(conninfo());
    pqxx::read_transaction tx(conn);
    std::map<std::string, std::map<std::string, Column>> out;
    for (const auto& row : tx.exec_params(
             "SELECT table_name, column_name, data_type, is_nullable, "
             "coalesce(column_default, '') FROM information_schema.columns "
             "WHERE table_schema = current_schema()")) {
      out[row[0].as<std::string>()][row[1].as<std::string>()] =
          Column{row[2].as<std::string>(), row[3].as<std::string>() == "YES",
                 row[4].as<std::string>()};
    }
    return out;
  }

  std::map<int, std::string> recorded_versions() {
    pqxx::connection conn(conninfo());
    pqxx::read_transaction tx(conn);
    std::map<int, std::string> out;
    for (const auto& row :
         tx.exec_params("SELECT version, name FROM schema_migrations ORDER BY version")) {
      out[row[0].as<int>()] = row[1].as<std::string>();
    }
    return out;
  }

  void exec(const std::string& sql) {
    pqxx::connection conn(conninfo());
    pqxx::work tx(conn);
    tx.exec(sql);
    tx.commit();
  }

  void migrate_fresh() {
    pqxx::connection conn(conninfo());
    auto result = apply_migrations(conn, embedded_migrations());
    ASSERT_TRUE(result.is_ok()) << result.status().message();
  }

  std::string admin_conninfo_;
  std::string db_name_;
  bool created_ = false;
  std::vector<std::string> roles_;
};

TEST(EmbeddedMigrations, AreNumberedFromOneWithoutGaps) {
  const auto& all = embedded_migrations();
  ASSERT_FALSE(all.empty());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].version, static_cast<int>(i) + 1) << all[i].name;
    EXPECT_FALSE(all[i].sql.empty()) << all[i].name;
  }
}

TEST_F(MigrationsTest, EmptyDatabaseGetsEveryTableAndPinnedColumn) {
  pqxx::connection conn(conninfo());
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  EXPECT_EQ(result->applied, static_cast<int>(embedded_migrations().size()));
  EXPECT_EQ(result->current_version, embedded_migrations().back().version);

  // SPEC §5 pins these names; operators' queries and the acceptance checks
  // depend on them.
  const std::map<std::string, std::vector<std::string>> pinned = {
      {"prospects",
       {"id", "name", "email", "phone", "company", "sales_status", "email_status",
        "email_suppressed_reason", "lead_score", "last_contact_at", "next_follow_up_at",
        "emails_sent_count", "emails_opened_count", "emails_clicked_count",
        "emails_replied_count", "calls_scheduled_count", "calls_completed_count", "deal_value",
        "created_at", "updated_at", "profile_updated_at", "source", "category", "urgency"}},
      {"email_activities",
       {"id", "prospect_id", "provider_message_id", "template", "subject", "status", "sent_at",
        "delivered_at", "opened_at", "clicked_at", "click_count", "replied_at", "reply_text",
        "bounced_at", "bounce_reason"}},
      {"sms_activities", {"id", "prospect_id", "status", "status_rank", "body", "replied_at"}},
      {"call_activities",
       {"id", "prospect_id", "scheduled_at", "completed_at", "duration_s", "notes", "objections",
        "next_steps", "outcome", "status"}},
      {"customers",
       {"id", "prospect_id", "status", "amount", "currency", "plan", "created_at", "churned_at"}},
      {"subscriptions",
       {"id", "customer_id", "prospect_id", "plan", "status", "started_at", "cancelled_at"}},
      {"companies",
       {"id", "name", "domain", "phone", "city", "state", "hubspot_company_id",
        "hubspot_sync_status", "last_hubspot_sync", "updated_at"}},
      {"contacts",
       {"id", "company_id", "email", "first_name", "last_name", "phone", "hubspot_contact_id",
        "hubspot_sync_status", "last_hubspot_sync", "updated_at"}},
      {"deals",
       {"id", "company_id", "prospect_id", "name", "stage", "amount", "close_date",
        "hubspot_deal_id", "hubspot_sync_status", "last_hubspot_sync", "updated_at",
        "stage_changed_at"}},
      {"outreach_activities", {"event_id", "prospect_id", "type", "occurred_at", "details"}},
      {"pipeline_stages", {"prospect_id", "stage", "stage_date", "notes"}},
      {"processed_events", {"event_id", "topic", "partition", "offset", "event_type"}},
      {"sync_queue",
       {"id", "entity_type", "entity_id", "operation", "status", "attempts", "next_attempt_at",
        "last_error", "created_at", "updated_at", "lease_owner", "lease_expires_at"}},
      {"followups",
       {"id", "prospect_id", "kind", "due_at", "status", "attempts", "cancel_reason",
        "provider_message_id", "template", "sequence_step", "source_event_id", "lease_owner",
        "lease_expires_at", "last_error", "created_at", "updated_at"}},
      {"notifications",
       {"id", "kind", "prospect_id", "payload", "status", "attempts", "next_attempt_at",
        "last_error", "created_at", "updated_at"}},
      {"dead_letters",
       {"id", "topic", "partition", "offset", "key", "payload", "error", "first_failed_at",
        "attempts", "replayed_at", "element", "headers", "reason", "last_failed_at",
        "replay_requested_at"}},
      {"schema_migrations", {"version", "name", "checksum", "applied_at"}},
  };

  const auto actual = columns();
  for (const auto& [table, names] : pinned) {
    const auto t = actual.find(table);
    ASSERT_NE(t, actual.end()) << "missing table " << table;
    for (const auto& name : names) {
      EXPECT_EQ(t->second.count(name), 1u) << "missing column " << table << "." << name;
    }
  }

  // Types the rest of the code relies on.
  EXPECT_EQ(actual.at("call_activities").at("objections").type, "ARRAY");
  EXPECT_EQ(actual.at("outreach_activities").at("details").type, "jsonb");
  EXPECT_EQ(actual.at("dead_letters").at("payload").type, "bytea");
  EXPECT_EQ(actual.at("dead_letters").at("offset").type, "bigint");
  EXPECT_TRUE(actual.at("prospects").at("name").nullable);
  EXPECT_EQ(actual.at("prospects").at("sales_status").default_value, "'new'::text");
  EXPECT_EQ(actual.at("prospects").at("email_status").default_value, "'none'::text");

  // Schema-wide conventions: every *_at is timestamptz, every *_count a
  // non-null integer starting at 0.
  for (const auto& [table, cols] : actual) {
    for (const auto& [name, col] : cols) {
      if (name.size() > 3 && name.compare(name.size() - 3, 3, "_at") == 0) {
        EXPECT_EQ(col.type, "timestamp with time zone") << table << "." << name;
      }
      if (name.size() > 6 && name.compare(name.size() - 6, 6, "_count") == 0) {
        EXPECT_EQ(col.type, "integer") << table << "." << name;
        EXPECT_FALSE(col.nullable) << table << "." << name;
        EXPECT_EQ(col.default_value, "0") << table << "." << name;
      }
    }
  }

  const auto versions = recorded_versions();
  ASSERT_EQ(versions.size(), embedded_migrations().size());
  for (const auto& m : embedded_migrations()) EXPECT_EQ(versions.at(m.version), m.name);
}

TEST_F(MigrationsTest, SecondRunAppliesNothing) {
  migrate_fresh();
  pqxx::connection conn(conninfo());
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  EXPECT_EQ(result->applied, 0);
  EXPECT_EQ(result->current_version, embedded_migrations().back().version);
  EXPECT_EQ(recorded_versions().size(), embedded_migrations().size());
}

TEST_F(MigrationsTest, ConcurrentRunsApplyEachMigrationOnce) {
  constexpr int kRunners = 4;
  std::vector<std::unique_ptr<pqxx::connection>> conns;
  for (int i = 0; i < kRunners; ++i) conns.push_back(std::make_unique<pqxx::connection>(conninfo()));

  std::latch start(kRunners);
  std::vector<std::optional<Result<MigrationReport>>> results(kRunners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRunners; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();  // all at once, to race for the lock
      results[i].emplace(apply_migrations(*conns[i], embedded_migrations()));
    });
  }
  for (auto& t : threads) t.join();

  int applied = 0;
  for (int i = 0; i < kRunners; ++i) {
    ASSERT_TRUE(results[i]->is_ok()) << "runner " << i << ": " << results[i]->status().message();
    EXPECT_EQ((*results[i])->current_version, embedded_migrations().back().version);
    applied += (*results[i])->applied;
  }
  EXPECT_EQ(applied, static_cast<int>(embedded_migrations().size()));
  EXPECT_EQ(recorded_versions().size(), embedded_migrations().size());
}

TEST_F(MigrationsTest, EditedReleasedMigrationIsFatal) {
  migrate_fresh();
  exec("UPDATE schema_migrations SET checksum = '0000000000000000' WHERE version = 1");
  pqxx::connection conn(conninfo());
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_FALSE(result.is_ok());
  EXPECT_TRUE(result.status().is_fatal());
  EXPECT_EQ(result.status().reason(), "migration_checksum_mismatch");
  EXPECT_NE(result.status().message().find("migration 1 "), std::string::npos)
      << result.status().message();
}

TEST_F(MigrationsTest, VersionFromNewerBinaryIsFatal) {
  migrate_fresh();
  exec("INSERT INTO schema_migrations (version, name, checksum) "
       "VALUES (9999, 'from_the_future', 'abc')");
  pqxx::connection conn(conninfo());
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_FALSE(result.is_ok());
  EXPECT_TRUE(result.status().is_fatal());
  EXPECT_EQ(result.status().reason(), "unknown_migration");
  EXPECT_NE(result.status().message().find("9999"), std::string::npos)
      << result.status().message();
}

TEST_F(MigrationsTest, FailingMigrationRollsBackReleasesLockAndNamesItself) {
  std::vector<Migration> migrations = embedded_migrations();
  const int bad_version = migrations.back().version + 1;
  migrations.push_back(Migration{
      bad_version, "broken", "CREATE TABLE half_done (id int);\nSELEC oops;"});

  pqxx::connection conn(conninfo());
  auto result = apply_migrations(conn, migrations);
  ASSERT_FALSE(result.is_ok());
  EXPECT_TRUE(result.status().is_fatal());
  const std::string& message = result.status().message();
  EXPECT_NE(message.find(std::to_string(bad_version)), std::string::npos) << message;
  EXPECT_NE(message.find("broken"), std::string::npos) << message;
  EXPECT_NE(message.find("42601"), std::string::npos) << message;  // the server's syntax error
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line for the log: " << message;
  EXPECT_EQ(message.find("host="), std::string::npos) << message;

  // The good migrations before it stay applied; the broken one left nothing.
  EXPECT_EQ(recorded_versions().size(), embedded_migrations().size());
  {
    pqxx::connection check(conninfo());
    pqxx::read_transaction tx(check);
    EXPECT_TRUE(tx.exec_params1("SELECT to_regclass('half_done') IS NULL")[0].as<bool>());
  }
  // The session lock was released even though the run failed: the same
  // connection holds no advisory lock, and another runner is not blocked.
  {
    pqxx::nontransaction tx(conn);
    EXPECT_EQ(tx.exec_params1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                              "AND pid = pg_backend_pid()")[0]
                  .as<int>(),
              0);
  }
  pqxx::connection other(conninfo());
  auto again = apply_migrations(other, embedded_migrations());
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EXPECT_EQ(again->applied, 0);
}

TEST_F(MigrationsTest, RoleWithoutCreatePrivilegeCanStartOnCurrentSchema) {
  migrate_fresh();
  const std::string role = create_runtime_role();
  exec("GRANT SELECT ON schema_migrations TO " + pqxx::connection(conninfo()).quote_name(role));

  pqxx::connection conn(conninfo(role));
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  EXPECT_EQ(result->applied, 0);
}

// deploy/sql/roles.sql, as an operator runs it on an empty database: the
// migrator applies every migration, and the runtime role starts on the
// current schema and reads and writes rows, but can create, drop, alter or
// truncate nothing.
TEST_F(MigrationsTest, ShippedRolesLetTheMigratorMigrateAndTheRuntimeOnlyWorkWithRows) {
  const std::string migrator = "crm_migrator_" + random_suffix();
  const std::string runtime = "crm_worker_" + random_suffix();
  roles_.push_back(runtime);
  roles_.push_back(migrator);
  const std::string sql = (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() /
                           "deploy" / "sql" / "roles.sql").string();
  const std::string command = "psql -X -q \"" + conninfo() + "\" -v migrator=" + migrator +
                              " -v runtime=" + runtime + " -f " + sql + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  ASSERT_EQ(pclose(pipe), 0) << out;

  {
    pqxx::connection conn(conninfo(migrator));
    auto result = apply_migrations(conn, embedded_migrations());
    ASSERT_TRUE(result.is_ok()) << result.status().message();
    EXPECT_EQ(result->applied, static_cast<int>(embedded_migrations().size()));
  }

  pqxx::connection conn(conninfo(runtime));
  auto result = apply_migrations(conn, embedded_migrations());
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  EXPECT_EQ(result->applied, 0);
  {
    // Rows, sequences, advisory locks, LISTEN: what the daemon does.
    pqxx::work tx(conn);
    tx.exec("INSERT INTO prospects (id, name) VALUES ('p1', 'Ada')");
    tx.exec("UPDATE prospects SET name = 'Ada L.' WHERE id = 'p1'");
    tx.exec("INSERT INTO sync_queue (entity_type, entity_id, operation) VALUES ('company', 'c1', 'upsert')");
    tx.exec("INSERT INTO api_requests (api, at) VALUES ('hubspot', now())");
    tx.exec("DELETE FROM api_requests");
    tx.exec("SELECT pg_advisory_xact_lock(42)");
    tx.exec("LISTEN crm_sync");
    tx.commit();
  }
  for (const char* ddl : {"CREATE TABLE intruder (id int)", "DROP TABLE prospects", "TRUNCATE processed_events",
                          "ALTER TABLE prospects ADD COLUMN x int", "CREATE INDEX ON prospects (name)",
                          "DROP FUNCTION crm_next_follow_up(text)"}) {
    pqxx::work tx(conn);
    EXPECT_THROW(tx.exec(ddl), pqxx::sql_error) << ddl;
  }
}

TEST_F(MigrationsTest, CheckConstraintsRejectUnknownStatuses) {
  migrate_fresh();
  const std::vector<std::string> bad = {
      "INSERT INTO prospects (id, sales_status) VALUES ('p1', 'won')",
      "INSERT INTO prospects (id, email_status) VALUES ('p1', 'bounced')",
      "INSERT INTO email_activities (id, status) VALUES ('e1', 'open')",
      "INSERT INTO sms_activities (id, status) VALUES ('s1', 'read')",
      "INSERT INTO call_activities (id, status) VALUES ('c1', 'missed')",
      "INSERT INTO customers (id, prospect_id, status) VALUES ('c1', 'p1', 'paused')",
      "INSERT INTO subscriptions (id, status) VALUES ('s1', 'paused')",
      "INSERT INTO sync_queue (entity_type, entity_id, operation, status) "
      "VALUES ('company', 'c1', 'upsert', 'retry')",
      "INSERT INTO sync_queue (entity_type, entity_id, operation) VALUES ('lead', 'c1', 'upsert')",
      "INSERT INTO sync_queue (entity_type, entity_id, operation) VALUES ('company', 'c1', 'merge')",
      "INSERT INTO followups (id, prospect_id, kind, due_at, status) "
      "VALUES ('f1', 'p1', 'email', now(), 'done')",
      "INSERT INTO followups (id, prospect_id, kind, due_at) VALUES ('f1', 'p1', 'sms', now())",
      // A live timer must know whom, what and when.
      "INSERT INTO followups (id, status) VALUES ('f1', 'scheduled')",
      "INSERT INTO notifications (id, kind, status) VALUES ('n1', 'reply', 'queued')",
  };
  pqxx::connection conn(conninfo());
  for (const auto& sql : bad) {
    pqxx::work tx(conn);
    EXPECT_THROW(tx.exec(sql), pqxx::check_violation) << sql;
  }

  // The good values of every order are accepted.
  pqxx::work tx(conn);
  for (const char* s : {"new", "contacted", "replied", "scheduled", "proposal", "closed_won",
                        "closed_lost"}) {
    tx.exec_params("INSERT INTO prospects (id, sales_status) VALUES ($1, $2)",
                   std::string("p_") + s, s);
  }
  for (const char* s : {"none", "sent", "delivered", "opened", "clicked", "replied"}) {
    tx.exec_params("INSERT INTO prospects (id, email_status) VALUES ($1, $2)",
                   std::string("pe_") + s, s);
  }
  // A cancel that arrives before its schedule leaves a tombstone.
  tx.exec_params("INSERT INTO followups (id, status, cancel_reason) VALUES ($1, $2, $3)", "f0",
                 "cancelled", "cancel_event");
  tx.commit();
}

TEST_F(MigrationsTest, SyncQueueKeepsOnePendingJobPerEntity) {
  migrate_fresh();
  pqxx::connection conn(conninfo());
  pqxx::work tx(conn);
  const std::string enqueue =
      "INSERT INTO sync_queue (entity_type, entity_id, operation) VALUES ($1, $2, $3) "
      "ON CONFLICT (entity_type, entity_id) WHERE status = 'pending' "
      "DO UPDATE SET operation = EXCLUDED.operation, updated_at = now()";
  tx.exec_params(enqueue, "company", "c1", "upsert");
  tx.exec_params(enqueue, "company", "c1", "delete");
  tx.exec_params(enqueue, "deal", "c1", "upsert");
  EXPECT_EQ(tx.exec_params1("SELECT count(*) FROM sync_queue WHERE entity_id = 'c1'")[0].as<int>(),
            2);
  EXPECT_EQ(tx.exec_params1("SELECT operation FROM sync_queue WHERE entity_type = 'company'")[0]
                .as<std::string>(),
            "delete");
  // Once claimed, a new request makes a new pending job: the change may
  // have come after the worker read the row.
  tx.exec_params("UPDATE sync_queue SET status = 'in_progress' WHERE entity_type = 'company'");
  tx.exec_params(enqueue, "company", "c1", "upsert");
  EXPECT_EQ(
      tx.exec_params1("SELECT count(*) FROM sync_queue WHERE entity_type = 'company'")[0].as<int>(),
      2);
}

TEST_F(MigrationsTest, DeadLetterPayloadKeepsArbitraryBytes) {
  migrate_fresh();
  const std::string poison("\xff\xfe{\"a\":\0\"\xc0\x80\"}", 12);
  pqxx::connection conn(conninfo());
  pqxx::work tx(conn);
  tx.exec_params(
      "INSERT INTO dead_letters (id, topic, partition, \"offset\", payload, reason, error) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7)",
      "t:0:1", "t", 0, 1, pqxx::binarystring(poison), "not_json", "invalid UTF-8");
  const auto row = tx.exec_params1("SELECT payload FROM dead_letters WHERE id = $1", "t:0:1");
  EXPECT_EQ(pqxx::binarystring(row[0]).str(), poison);
}

}  // namespace
}  // namespace crm::db
