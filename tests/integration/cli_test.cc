// The command line: exit codes, --help, check-config's error reports, and
// the dead-letter commands against a running daemon.

#include <gtest/gtest.h>

#include <fstream>

#include "tests/harness/harness.h"

namespace crm::test {
namespace {

TEST(Cli, VersionAndHelp) {
  auto [code, out] = run_cli({"version"});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("librdkafka"), std::string::npos);
  auto [hcode, help] = run_cli({"--help"});
  EXPECT_EQ(hcode, 0);
  for (const char* cmd : {"run", "migrate", "check-config", "dev-broker", "dlq list", "dlq replay", "version"}) {
    EXPECT_NE(help.find(cmd), std::string::npos) << cmd;
  }
}

TEST(Cli, UnknownCommandAndOptionAreUsageErrors) {
  EXPECT_EQ(run_cli({"frobnicate"}).first, 2);
  EXPECT_EQ(run_cli({"run", "--no-such-option"}).first, 2);
  EXPECT_EQ(run_cli({}).first, 2);
  EXPECT_EQ(run_cli({"dev-broker", "--brokers", "zero"}).first, 2);
}

// Guarantee: a bad configuration fails at start naming the file, line and
// key, for check-config and for run alike.
TEST(Cli, CheckConfigNamesTheBadKey) {
  TempDir dir;
  std::string path = dir.file("bad.toml");
  std::ofstream(path) << "[kafka]\ngroup_id = \"g\"\n\n[retry]\nmax_attemps = 3\n";
  for (const char* cmd : {"check-config", "run"}) {
    auto [code, out] = run_cli({cmd, "--config", path});
    EXPECT_EQ(code, 2) << cmd << ": " << out;
    EXPECT_NE(out.find(path + ":5"), std::string::npos) << out;
    EXPECT_NE(out.find("retry.max_attemps"), std::string::npos) << out;
  }
  std::ofstream(path) << "[retry]\ninitial_backoff = 5\n";
  auto [code, out] = run_cli({"check-config", "--config", path});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("retry.initial_backoff"), std::string::npos) << out;
}

// Guarantee: check-config prints the effective values and never a secret.
TEST(Cli, CheckConfigMasksSecrets) {
  const std::string canary = "canary-7f3a9c-secret";
  auto [code, out] = run_cli({"check-config"},
                             {{"CRM_WORKER_HUBSPOT_TOKEN", canary},
                              {"CRM_WORKER_SENDGRID_API_KEY", canary},
                              {"CRM_WORKER_SLACK_WEBHOOK_URL", "https://hooks.example.com/" + canary},
                              {"CRM_WORKER_DATABASE_URL", "postgresql://crm:" + canary + "@db.example.com/crm"},
                              {"CRM_WORKER_KAFKA_GROUP_ID", "from-env"}});
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find(canary), std::string::npos) << out;
  EXPECT_NE(out.find("from-env"), std::string::npos);
}

// Guarantee: a database URL libpq cannot parse fails at start with exit 2,
// and its password (which libpq's own error would repeat) is not printed.
TEST(Cli, UnparsableDatabaseUrlIsAConfigurationError) {
  for (const char* cmd : {"check-config", "run", "migrate"}) {
    auto [code, out] = run_cli({cmd}, {{"CRM_WORKER_DATABASE_URL", "postgresql://crm:s3cr%ZZet@127.0.0.1/crm"}});
    EXPECT_EQ(code, 2) << cmd << ": " << out;
    EXPECT_NE(out.find("database.url"), std::string::npos) << out;
    EXPECT_EQ(out.find("s3cr"), std::string::npos) << out;
  }
}

// Guarantee: a dead letter fixed by an operator and replayed is applied
// once; replaying it again applies nothing more.
TEST(Cli, DlqReplayAppliesAFixedDeadLetterOnce) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  Producer producer(broker.bootstrap());
  WorkerProcess worker(db, broker.bootstrap());
  const std::map<std::string, std::string> env = {{"CRM_WORKER_DATABASE_URL", db.url()}};

  // Missing the required name: a dead letter.
  std::string broken =
      R"({"specversion":"1.0","id":"fix-me","source":"t","type":"crm.prospect.discovered",)"
      R"("time":"2026-03-01T10:00:00Z","data":{"prospect_id":"p9"}})";
  ASSERT_GE(producer.send("crm.outreach.events", "p9", broken), 0);
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM dead_letters") == 1; }, 60s))
      << worker.process().log();
  std::string id = db.scalar("SELECT id FROM dead_letters");

  auto [lcode, listing] = run_cli({"dlq", "list"}, env);
  EXPECT_EQ(lcode, 0);
  EXPECT_NE(listing.find(id), std::string::npos) << listing;
  EXPECT_NE(listing.find("missing_field"), std::string::npos) << listing;

  // The operator fixes the payload, then replays.
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec_params("UPDATE dead_letters SET payload = convert_to($1, 'UTF8') WHERE id = $2",
                   discovered_event("fix-me", "p9", "Fixed", "2026-03-01T10:00:00Z"), id);
    tx.commit();
  }
  auto [rcode, rout] = run_cli({"dlq", "replay", "--id", id}, env);
  EXPECT_EQ(rcode, 0) << rout;
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL") == 1; }, 30s))
      << worker.process().log();
  EXPECT_EQ(db.scalar("SELECT name FROM prospects WHERE id = 'p9'"), "Fixed");
  EXPECT_EQ(db.count("SELECT count(*) FROM processed_events WHERE event_id = 'fix-me'"), 1);
  // The dead letter keeps what went wrong the first time (the replay marks
  // itself begun while it runs, and takes that back once it is done).
  EXPECT_NE(db.scalar("SELECT error FROM dead_letters WHERE id = '" + id + "'").find("name"), std::string::npos)
      << db.scalar("SELECT error FROM dead_letters WHERE id = '" + id + "'");

  // A second replay of the same id is refused...
  auto [again, aout] = run_cli({"dlq", "replay", "--id", id}, env);
  EXPECT_EQ(again, 1);
  EXPECT_NE(aout.find("already replayed"), std::string::npos) << aout;
  // ...and even forced through the table, it applies nothing twice.
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec_params("UPDATE dead_letters SET replayed_at = NULL, replay_requested_at = now() WHERE id = $1", id);
    tx.commit();
  }
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL") == 1; }, 30s));
  EXPECT_EQ(db.count("SELECT count(*) FROM outreach_activities WHERE event_id = 'fix-me'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM pipeline_stages WHERE prospect_id = 'p9'"), 1);

  EXPECT_EQ(run_cli({"dlq", "replay", "--id", "no:such:id"}, env).first, 1);
  EXPECT_EQ(run_cli({"dlq", "replay"}, env).first, 2);
}

}  // namespace
}  // namespace crm::test
