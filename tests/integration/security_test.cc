// Security checks of TESTPLAN.md against the real worker (dev broker,
// PostgreSQL, fake HubSpot / SendGrid / Slack on loopback). One guarantee
// per test:
//   * no secret (HubSpot token, SendGrid key, Slack webhook URL, database
//     password, Kafka SASL password) reaches the log, /metrics, /healthz,
//     /readyz, any table, the dead-letter topic or the output of the
//     operator commands, even when every API answers with a body and headers
//     that echo the token back, and through the poison set and a database
//     outage;
//   * /metrics and the health endpoints listen on loopback unless told
//     otherwise;
//   * 10,000 bogus event types (and SendGrid event names, on every consumed
//     topic, structured and binary mode) do not create a series each: every
//     label value comes from an allow-list;
//   * hostile but valid values (SQL, a newline and a fake log record,
//     control characters, U+202E) are applied byte for byte, not dead-lettered,
//     every log record stays one line, and no URL from an event is fetched.
//
// The SQL side of "hostile values" at the applier level is
// applier_test.cc's HostileValuesRoundTripExactly; this file adds the whole
// worker, more fields, ids and the log. check-config alone is cli_test.cc's
// CheckConfigMasksSecrets; here it runs with the worker's own configuration.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "daemon/core/time.h"
#include "handlers/routing.h"
#include "monitoring/probes.h"
#include "tests/harness/fake_http.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"
#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

constexpr const char* kOutreach = "crm.outreach.events";
constexpr const char* kSyncTopic = "crm.sync.jobs";
constexpr const char* kFollowupsTopic = "crm.followups";
constexpr const char* kSendgridTopic = "sendgrid.events";
constexpr const char* kDeadLetterTopic = "crm.dead-letter";

// A structured-mode CloudEvent whose data is `data` (JSON-escaped here, so
// hostile strings can be put in as they are).
std::string event(const std::string& id, const std::string& type, const std::string& time,
                  const json::object& data, const std::string& source = "test") {
  json::object e{{"specversion", "1.0"}, {"id", id},     {"source", source},
                 {"type", type},         {"time", time}, {"data", data}};
  return json::serialize(e);
}

std::string due_now() {
  return format_rfc3339(Timestamp{now_timestamp().micros_since_epoch - 1'000'000});
}

// Every table of the database as text, and every bytea column decoded, so
// that a search finds a value in whatever column holds it.
std::string database_text(const TestDatabase& db) {
  auto c = db.connect();
  pqxx::nontransaction tx(*c);
  std::string out;
  for (const auto& row : tx.exec("SELECT table_name FROM information_schema.tables"
                                 " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")) {
    const std::string table = tx.quote_name(row[0].as<std::string>());
    out += table + ":\n";
    out += tx.exec("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM " + table + " t")[0][0]
               .as<std::string>();
    out += "\n";
  }
  for (const auto& row : tx.exec("SELECT table_name, column_name FROM information_schema.columns"
                                 " WHERE table_schema = 'public' AND data_type = 'bytea'")) {
    const std::string table = tx.quote_name(row[0].as<std::string>());
    const std::string column = tx.quote_name(row[1].as<std::string>());
    out += table + "." + column + " decoded:\n";
    out += tx.exec("SELECT coalesce(string_agg(encode(" + column +
                   ", 'escape'), E'\\n'), '') FROM " + table)[0][0]
               .as<std::string>();
    out += "\n";
  }
  return out;
}

// Up to 80 bytes around `pos`, for a failure message.
std::string around(const std::string& text, size_t pos) {
  const size_t from = pos > 40 ? pos - 40 : 0;
  return text.substr(from, 80);
}

std::string metric_label(const std::string& series, const std::string& label) {
  const std::string key = label + "=\"";
  const auto pos = series.find(key);
  if (pos == std::string::npos) return "";
  const auto end = series.find('"', pos + key.size());
  return series.substr(pos + key.size(), end - pos - key.size());
}

// The series lines of a scrape (comments left out).
std::vector<std::string> series_of(const std::string& scrape) {
  std::vector<std::string> out;
  std::istringstream lines(scrape);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] != '#') out.push_back(line);
  }
  return out;
}

// ---------------------------------------------------------------------------
// The canary run.

struct Canary {
  const char* secret;
  std::string value;
};

// Each fake API answers its first request 503 and every later one 401, both
// with a body and headers that repeat the Authorization header and the path
// back, as a misconfigured gateway or an API's error page may.
FakeHttpServer::Handler echoing(std::atomic<int>& calls, const std::string& content_type) {
  return [&calls, content_type](const Received& r) {
    const std::string auth = r.headers.count("authorization") ? r.headers.at("authorization") : "";
    const std::string echo = auth + " on " + r.path;
    Answer a;
    a.status = calls++ == 0 ? 503 : 401;
    a.headers = {
        {"Content-Type", content_type},
        {"WWW-Authenticate", "Bearer error=\"invalid_token\", error_description=\"" + echo + "\""},
        {"X-Echo", echo}};
    if (content_type == "application/json") {
      // HubSpot's and SendGrid's error shapes, every field the echo.
      a.body = json::serialize(json::object{
          {"status", "error"},
          {"message", "Authentication credentials not valid: " + echo},
          {"correlationId", echo},
          {"category", "INVALID_AUTHENTICATION " + echo},
          {"errors",
           json::array{json::object{{"message", "invalid api key " + echo}, {"field", echo}}}}});
    } else {
      a.body = "invalid_token " + echo;
    }
    return a;
  };
}

TEST(Security, NoSecretReachesLogsMetricsHealthTablesDeadLettersOrCommandOutput) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  Producer producer(broker.bootstrap());
  // Before the servers: their handlers count in them until the servers stop.
  std::atomic<int> hubspot_calls{0}, sendgrid_calls{0}, slack_calls{0};
  FakeHttpServer hubspot, sendgrid, slack;
  hubspot.set_handler("/", echoing(hubspot_calls, "application/json"));
  sendgrid.set_handler("/", echoing(sendgrid_calls, "application/json"));
  slack.set_handler("/", echoing(slack_calls, "text/plain"));

  // Every canary holds "cnry": a search for it finds a partial leak too.
  const std::string slack_path = "/services/T0000/B0000/cnrySLACK-52d8e1";
  const std::vector<Canary> canaries = {
      {"HubSpot token", "pat-na1-cnryHUBSPOT-3f9a70"},
      {"SendGrid API key", "SG.cnrySENDGRID.7c1e44"},
      {"Slack webhook URL", "cnrySLACK-52d8e1"},
      {"database password", "cnryDATABASE-9b0462"},
      {"Kafka SASL password", "cnrySASL-e61d2f"},
      {"any canary", "cnry"},
  };
  // The harness's URL names the user without a password; the canary goes
  // right after it. The cluster trusts local connections, so the password
  // is carried everywhere the URL goes without being needed.
  std::string url = db.url();
  ASSERT_EQ(url.rfind("postgresql://", 0), 0u) << url;
  url.insert(url.find('@'), ":" + canaries[3].value);
  const std::map<std::string, std::string> env = {
      {"CRM_WORKER_HUBSPOT_TOKEN", canaries[0].value},
      {"CRM_WORKER_SENDGRID_API_KEY", canaries[1].value},
      {"CRM_WORKER_SLACK_WEBHOOK_URL", slack.base_url() + slack_path},
      {"CRM_WORKER_DATABASE_URL", url},
      {"CRM_WORKER_KAFKA_SASL_PASSWORD", canaries[4].value},
      {"CRM_WORKER_LOG_FORMAT", "json"},
      {"CRM_WORKER_LOG_LEVEL", "debug"},
  };
  const std::string config =
      "[hubspot]\nbase_url = \"" + hubspot.base_url() +
      "\"\ntimeout = \"2s\"\n"
      "[sendgrid]\nbase_url = \"" +
      sendgrid.base_url() +
      "\"\nfrom_email = \"sales@example.com\"\nfollowup_template = \"d-x\"\ntimeout = \"2s\"\n"
      "[slack]\ntimeout = \"2s\"\n"
      "[followups]\nsend_window = \"00:00-24:00\"\nsend_on_weekends = true\n"
      "[retry]\nmax_attempts = 3\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n";
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec("INSERT INTO companies (id, name, domain) VALUES ('c1', 'Acme', 'acme.example')");
    tx.commit();
  }
  WorkerProcess worker(db, broker.bootstrap(), env, config);

  // Work that calls each API once it is applied: a reply (Slack), a due
  // follow-up email (SendGrid), a sync request (HubSpot).
  const std::vector<std::pair<std::string, std::string>> valid = {
      {kOutreach, event("v1", "crm.prospect.discovered", at_hour(1),
                        {{"prospect_id", "p1"}, {"name", "Ada"}, {"email", "ada@example.com"}})},
      {kOutreach,
       event("v2", "crm.email.sent", at_hour(2), {{"prospect_id", "p1"}, {"email_id", "e1"}})},
      {kOutreach, event("v3", "crm.email.replied", at_hour(3),
                        {{"prospect_id", "p1"}, {"email_id", "e1"}, {"reply_text", "Call me"}})},
      {kOutreach,
       event("v4", "crm.prospect.discovered", at_hour(1),
             {{"prospect_id", "p2"}, {"name", "Grace"}, {"email", "grace@example.com"}})},
      {kFollowupsTopic, event("v5", "crm.followup.scheduled", at_hour(2),
                              {{"followup_id", "f1"},
                               {"prospect_id", "p2"},
                               {"kind", "email"},
                               {"due_at", due_now()}})},
      {kSyncTopic,
       event("v6", "crm.sync.requested", at_hour(2),
             {{"entity_type", "company"}, {"entity_id", "c1"}, {"operation", "upsert"}})},
  };
  // The follow-up's topic is not ordered with its prospect's: it goes once
  // the prospect (and its address) is applied, so that it is sent at once
  // rather than after waiting for its prospect.
  for (const auto& [topic, value] : valid) {
    if (topic == kFollowupsTopic) {
      ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM prospects WHERE id = 'p2'") == 1; }, 60s))
          << worker.process().log();
    }
    ASSERT_GE(producer.send(topic, "k", value), 0);
  }
  // TESTPLAN's poison set, as every fault scenario sends it: each message
  // must end up as exactly one dead letter.
  const std::vector<PoisonMessage> poison = poison_set();
  for (const PoisonMessage& p : poison) {
    ASSERT_GE(producer.send(p.message.topic, p.message.key, p.message.value, p.message.headers), 0)
        << p.message.value.substr(0, 80);
  }

  ASSERT_TRUE(
      wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == 6; }, 60s))
      << worker.process().log();
  ASSERT_TRUE(wait_until(
      [&] {
        return db.count("SELECT count(*) FROM dead_letters") ==
               static_cast<long long>(poison.size());
      },
      30s))
      << db.scalar("SELECT string_agg(reason, ',') FROM dead_letters");
  // Each API was called with its secret, first refused with 503 (retried),
  // then with 401 (final).
  ASSERT_TRUE(wait_until(
      [&] {
        return db.scalar("SELECT status FROM sync_queue") == "failed" &&
               db.scalar("SELECT status FROM followups WHERE id = 'f1'") == "dead" &&
               db.count("SELECT count(*) FROM notifications WHERE status <> 'dead'") == 0 &&
               db.count("SELECT count(*) FROM notifications") > 0;
      },
      60s))
      << db.scalar("SELECT string_agg(status, ',') FROM sync_queue") << " "
      << db.scalar("SELECT string_agg(status, ',') FROM followups") << " "
      << db.scalar("SELECT string_agg(status, ',') FROM notifications") << "\n"
      << worker.process().log();
  ASSERT_GE(hubspot.requests().size(), 2u);
  ASSERT_GE(sendgrid.requests().size(), 2u);
  ASSERT_GE(slack.requests().size(), 2u);
  EXPECT_EQ(hubspot.requests()[0].headers.at("authorization"), "Bearer " + canaries[0].value);
  EXPECT_EQ(sendgrid.requests()[0].headers.at("authorization"), "Bearer " + canaries[1].value);
  EXPECT_EQ(slack.requests()[0].path, slack_path);

  // A database outage: the reconnect and retry paths log their errors
  // (libpq's messages, the URL they connect to) while an event waits.
  db.set_available(false);
  ASSERT_GE(producer.send(kOutreach, "p1",
                          event("v7", "crm.email.opened", at_hour(4),
                                {{"prospect_id", "p1"}, {"email_id", "e1"}})),
            0);
  ASSERT_TRUE(wait_until(
      [&] {
        return worker.process().log().find("batch not applied, retrying") != std::string::npos;
      },
      30s));
  db.set_available(true);
  ASSERT_TRUE(
      wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == 7; }, 60s))
      << worker.process().log();
  ASSERT_TRUE(wait_until([&] { return worker.http_get("/readyz").first == 200; }, 30s));

  // Everywhere the worker writes or answers.
  std::vector<std::pair<std::string, std::string>> places = {
      {"/metrics", worker.http_get("/metrics").second},
      {"/healthz", worker.http_get("/healthz").second},
      {"/readyz", worker.http_get("/readyz").second},
      {"the database", database_text(db)},
  };
  const std::vector<ConsumedMessage> published =
      consume_topic(broker.bootstrap(), kDeadLetterTopic, poison.size(), 30s);
  EXPECT_EQ(published.size(), poison.size());
  std::string topic_text;
  for (const ConsumedMessage& m : published) {
    topic_text += m.key + "\n" + m.value + "\n";
    for (const auto& [name, value] : m.headers) topic_text += name + ": " + value + "\n";
  }
  places.emplace_back("the dead-letter topic", topic_text);
  std::map<std::string, std::string> cli_env = env;
  cli_env["CRM_WORKER_LOG_FORMAT"] = "text";
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"check-config"},
                                             {"dlq", "list", "--all"},
                                             {"sync", "list", "--status", "all"},
                                             {"followups", "list", "--status", "dead"}}) {
    std::vector<std::string> with_config = args;
    with_config.insert(with_config.end(), {"--config", worker.config_path()});
    const auto [code, out] = run_cli(with_config, cli_env);
    std::string name = "crm-worker";
    for (const auto& a : args) name += " " + a;
    EXPECT_EQ(code, 0) << name << ": " << out;
    places.emplace_back(name, out);
  }
  const std::string check_config = std::find_if(places.begin(), places.end(), [](const auto& p) {
                                     return p.first == "crm-worker check-config";
                                   })->second;
  // Last, so that it holds everything the commands above made it do.
  places.emplace_back("the worker's log", worker.process().log());

  for (const auto& [place, text] : places) {
    EXPECT_FALSE(text.empty()) << place;
    for (const Canary& c : canaries) {
      const size_t pos = text.find(c.value);
      EXPECT_EQ(pos, std::string::npos)
          << "the " << c.secret << " is in " << place << ": …" << around(text, pos) << "…";
    }
  }
  // check-config did load every secret (masked), so the search above was
  // not for secrets the worker never had.
  EXPECT_NE(check_config.find(R"("sasl.password" = "****")"), std::string::npos) << check_config;
  EXPECT_NE(check_config.find(":****@"), std::string::npos) << check_config;
}

// Guarantee: without http.listen the endpoints listen on 127.0.0.1, never
// on every interface. Read from what the worker reports and from the
// sockets the process really has open.
TEST(Security, MetricsListenOnLoopbackByDefault) {
  TestDatabase db;
  DevBrokerProcess broker(1, 1);
  TempDir dir;
  // Not WorkerProcess: it sets http.listen to a free port.
  Process worker({worker_binary(), "run"},
                 {{"CRM_WORKER_DATABASE_URL", db.url()},
                  {"CRM_WORKER_KAFKA_BROKERS", broker.bootstrap()},
                  {"CRM_WORKER_LOG_FORMAT", "text"}},
                 dir.file("worker.log"));
  // Another process may hold the default port: the worker then says where
  // it tried to listen, which is what this test is about.
  ASSERT_TRUE(wait_until(
      [&] {
        const std::string log = worker.log();
        return log.find("serving metrics and health") != std::string::npos ||
               log.find("cannot start the HTTP endpoint") != std::string::npos;
      },
      30s))
      << worker.log();
  const std::string log = worker.log();
  const bool serving = log.find("serving metrics and health") != std::string::npos;
  EXPECT_NE(log.find(serving ? "listen=127.0.0.1:9464" : "127.0.0.1:9464"), std::string::npos)
      << log;
  if (serving) {
    // Every listening TCP socket of the process is bound to 127.0.0.1.
    std::set<std::string> inodes;
    for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(worker.pid()) + "/fd")) {
      std::error_code ec;
      const std::string target = fs::read_symlink(fd.path(), ec).string();
      if (!ec && target.rfind("socket:[", 0) == 0)
        inodes.insert(target.substr(8, target.size() - 9));
    }
    std::vector<std::string> listening;
    for (const char* table : {"tcp", "tcp6"}) {
      std::ifstream in("/proc/" + std::to_string(worker.pid()) + "/net/" + table);
      std::string line;
      std::getline(in, line);  // header
      while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string slot, local, remote, state, queues, timer, retrans, uid, timeout, inode;
        f >> slot >> local >> remote >> state >> queues >> timer >> retrans >> uid >> timeout >>
            inode;
        if (state == "0A" && inodes.count(inode))
          listening.push_back(std::string(table) + " " + local);
      }
    }
    ASSERT_FALSE(listening.empty()) << "the worker's listening socket was not found";
    for (const std::string& l : listening) {
      // 0100007F:24F8 is 127.0.0.1:9464 in /proc's byte order.
      EXPECT_EQ(l, "tcp 0100007F:24F8") << "listening beyond loopback: " << l;
    }
  }
  worker.signal(SIGTERM);
  EXPECT_TRUE(worker.wait(30s).has_value());
}

// ---------------------------------------------------------------------------
// Bounded labels.

TEST(Security, BogusEventTypesDoNotMakeSeries) {
  TestDatabase db;
  DevBrokerProcess broker(1, 2);
  Producer producer(broker.bootstrap());
  WorkerProcess worker(db, broker.bootstrap());

  // A baseline with every kind of series that ordinary traffic and bogus
  // input make: an applied event, and an unknown type (an unknown SendGrid
  // event name) on every consumed topic.
  ASSERT_GE(producer.send(kOutreach, "p1", discovered_event("b1", "p1", "Ada", at_hour(1))), 0);
  for (const char* topic : {kOutreach, kSyncTopic, kFollowupsTopic}) {
    ASSERT_GE(producer.send(topic, "p1",
                            event(std::string("b-") + topic, "crm.no.such.type", at_hour(1),
                                  {{"prospect_id", "p1"}})),
              0);
  }
  ASSERT_GE(
      producer.send(
          kSendgridTopic, "p1",
          R"([{"event":"no_such_event","sg_event_id":"sg-b","email_id":"e1","timestamp":1772359200}])"),
      0);
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM dead_letters") == 4; }, 60s))
      << worker.process().log();
  std::string baseline;
  ASSERT_TRUE(wait_until(
      [&] {
        baseline = worker.http_get("/metrics").second;
        return metric_sum(baseline, "crm_worker_events_total{") == 5;
      },
      30s))
      << baseline;

  // 10,000 events with distinct bogus types and sources on every consumed
  // topic, as structured CloudEvents, in binary mode, and as SendGrid
  // elements with bogus event names.
  constexpr int kStructured = 9000;
  constexpr int kBinary = 500;
  constexpr int kSendgrid = 500;
  std::vector<Producer::OutMessage> flood;
  const char* topics[] = {kOutreach, kSyncTopic, kFollowupsTopic};
  for (int i = 0; i < kStructured; ++i) {
    const std::string n = std::to_string(i);
    flood.push_back({topics[i % 3], "k" + n,
                     event("bogus-" + n, "bogus.type." + n, at_hour(2), {{"prospect_id", "p" + n}},
                           "bogus-source-" + n)});
  }
  ASSERT_EQ(producer.send_all(flood), flood.size());
  for (int i = 0; i < kBinary; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_GE(producer.send(kOutreach, "k", R"({"prospect_id":"p1"})",
                            {{"ce_specversion", "1.0"},
                             {"ce_id", "bin-" + n},
                             {"ce_source", "bogus-bin-source-" + n},
                             {"ce_type", "bogus.binary.type." + n},
                             {"ce_time", at_hour(2)}}),
              0);
  }
  json::array elements;
  for (int i = 0; i < kSendgrid; ++i) {
    elements.push_back(json::object{{"event", "bogus_sendgrid_event_" + std::to_string(i)},
                                    {"sg_event_id", "sg-" + std::to_string(i)},
                                    {"email_id", "e1"},
                                    {"timestamp", 1772359200}});
  }
  ASSERT_GE(producer.send(kSendgridTopic, "k", json::serialize(elements)), 0);

  constexpr long long kBogus = kStructured + kBinary + kSendgrid;
  ASSERT_TRUE(
      wait_until([&] { return db.count("SELECT count(*) FROM dead_letters") == 4 + kBogus; }, 240s))
      << db.count("SELECT count(*) FROM dead_letters") << " dead letters\n"
      << worker.process().log();
  std::string after;
  ASSERT_TRUE(wait_until(
      [&] {
        after = worker.http_get("/metrics").second;
        return metric_sum(after, "crm_worker_events_total{") == 5 + kBogus;
      },
      30s))
      << after;

  std::set<std::string> types{"other"};
  for (std::string_view t : handlers::routed_types()) types.insert(std::string(t));
  std::set<std::string> reasons = monitoring::dead_letter_reasons();
  reasons.insert("other");
  const std::set<std::string> consumed{kOutreach, kSyncTopic, kFollowupsTopic, kSendgridTopic,
                                       "other"};
  // A series without its value: what identifies it.
  auto key = [](const std::string& s) { return s.substr(0, s.rfind(' ')); };
  // The lag series come and go with the partitions that have data; there is
  // one per assigned partition and family at most.
  auto per_partition = [](const std::string& s) {
    return s.rfind("crm_worker_kafka_consumer_lag", 0) == 0;
  };
  std::set<std::string> before_keys;
  for (const std::string& s : series_of(baseline)) {
    if (!per_partition(s)) before_keys.insert(key(s));
  }
  int partition_series = 0;
  for (const std::string& s : series_of(after)) {
    EXPECT_EQ(s.find("bogus"), std::string::npos) << "a label value from the input: " << s;
    if (s.rfind("crm_worker_events_total{", 0) == 0) {
      EXPECT_TRUE(types.count(metric_label(s, "type"))) << s;
      EXPECT_TRUE(consumed.count(metric_label(s, "topic"))) << s;
    }
    if (s.rfind("crm_worker_dead_letters_total{", 0) == 0) {
      EXPECT_TRUE(reasons.count(metric_label(s, "reason"))) << s;
      EXPECT_TRUE(consumed.count(metric_label(s, "topic"))) << s;
    }
    if (per_partition(s)) {
      ++partition_series;
      EXPECT_TRUE(consumed.count(metric_label(s, "topic"))) << s;
    } else {
      EXPECT_TRUE(before_keys.count(key(s))) << "a series the baseline did not have: " << s;
    }
  }
  EXPECT_LE(partition_series, 2 * 4 * 2) << "two families, four topics, two partitions";
  EXPECT_LE(after.size(), baseline.size() + 2048) << "before:\n"
                                                  << baseline << "\nafter:\n"
                                                  << after;
  std::printf(
      "metrics: %zu series (%zu bytes) before, %zu series (%zu bytes) after %lld bogus types\n",
      series_of(baseline).size(), baseline.size(), series_of(after).size(), after.size(), kBogus);
}

// ---------------------------------------------------------------------------
// Hostile but valid values.

class HostileValues : public ::testing::TestWithParam<const char*> {};

TEST_P(HostileValues, AreAppliedByteForByteAndEveryLogRecordStaysOneLine) {
  const std::string format = GetParam();
  TestDatabase db;
  DevBrokerProcess broker(1, 1);
  Producer producer(broker.bootstrap());
  // A URL in an event is data, never an address to fetch.
  FakeHttpServer trap;
  const std::string trap_url = trap.base_url() + "/fetched?from=event";
  WorkerProcess worker(db, broker.bootstrap(),
                       {{"CRM_WORKER_LOG_FORMAT", format}, {"CRM_WORKER_LOG_LEVEL", "debug"}});

  // SQL, a newline then a fake record in either log format (dated 1999, so
  // no real record can be mistaken for it), control characters, an ANSI
  // escape, DEL, and a right-to-left override.
  const std::string hostile =
      "'); DROP TABLE prospects;--\n"
      R"({"ts":"1999-12-31T23:59:59.000000Z","level":"error","msg":"FAKE-INJECTED"})"
      "\r\n1999-12-31T23:59:59.000000Z error FAKE-INJECTED\n"
      "\x01\x07\x08\t\x0b\x0c\x1b[31m\x7f \xe2\x80\xae"
      "evil.exe";
  const std::string pid = "p-'); DROP TABLE prospects;--\xe2\x80\xae";
  const std::vector<std::string> events = {
      event("h1", "crm.prospect.discovered", at_hour(1),
            {{"prospect_id", pid},
             {"name", hostile},
             {"company", hostile},
             {"source", trap_url},
             {"email", "ada@example.com"}}),
      event("h2", "crm.email.sent", at_hour(2),
            {{"prospect_id", pid}, {"email_id", "e-h"}, {"subject", hostile}}),
      event("h3", "crm.email.clicked", at_hour(3),
            {{"prospect_id", pid}, {"email_id", "e-h"}, {"url", trap_url}}),
      event("h4", "crm.email.replied", at_hour(4),
            {{"prospect_id", pid}, {"email_id", "e-h"}, {"reply_text", hostile}}),
      event("h5", "crm.sms.replied", at_hour(5),
            {{"prospect_id", pid}, {"sms_id", "s-h"}, {"body", hostile}}),
      event("h6", "crm.call.completed", at_hour(6),
            {{"prospect_id", pid},
             {"call_id", "c-h"},
             {"completed_at", at_hour(6)},
             {"notes", hostile},
             {"next_steps", hostile}}),
  };
  for (const std::string& e : events) ASSERT_GE(producer.send(kOutreach, pid, e), 0);
  // And a fake record where the worker does write input into its log: the
  // error of a dead letter quotes the unknown type (its first bytes only, so
  // the fake comes first).
  const std::string hostile_type =
      "\n{\"msg\":\"FAKE-INJECTED\"}\r\n1999-12-31T23:59:59Z error FAKE\n\xe2\x80\xae\x1b[31m";
  ASSERT_GE(
      producer.send(kOutreach, pid, event("h7", hostile_type, at_hour(7), {{"prospect_id", pid}})),
      0);
  // An unknown type whose quoted part would end inside a UTF-8 sequence.
  ASSERT_GE(producer.send(
                kOutreach, pid,
                event("h8", std::string(63, 'x') + "\xc3\xa9", at_hour(8), {{"prospect_id", pid}})),
            0);

  ASSERT_TRUE(
      wait_until([&] { return db.count("SELECT count(*) FROM processed_events") == 6; }, 60s))
      << db.scalar("SELECT string_agg(reason || ': ' || error, E'\\n') FROM dead_letters")
      << worker.process().log();
  ASSERT_TRUE(wait_until([&] { return db.count("SELECT count(*) FROM dead_letters") == 2; }, 30s))
      << db.scalar("SELECT string_agg(reason || ': ' || error, E'\\n') FROM dead_letters")
      << worker.process().log();
  EXPECT_EQ(db.scalar("SELECT string_agg(DISTINCT reason, ',') FROM dead_letters"), "unknown_type");

  // Byte for byte, read back as parameters bound them.
  auto c = db.connect();
  pqxx::nontransaction tx(*c);
  auto one = [&](const char* sql) {
    const pqxx::result r = tx.exec_params(sql, pid);
    return r.size() == 1 && !r[0][0].is_null() ? r[0][0].as<std::string>()
                                               : std::string("<no row>");
  };
  EXPECT_EQ(one("SELECT name FROM prospects WHERE id = $1"), hostile);
  EXPECT_EQ(one("SELECT company FROM prospects WHERE id = $1"), hostile);
  EXPECT_EQ(one("SELECT source FROM prospects WHERE id = $1"), trap_url);
  EXPECT_EQ(one("SELECT subject FROM email_activities WHERE prospect_id = $1"), hostile);
  EXPECT_EQ(one("SELECT reply_text FROM email_activities WHERE prospect_id = $1"), hostile);
  EXPECT_EQ(one("SELECT body FROM sms_activities WHERE prospect_id = $1"), hostile);
  EXPECT_EQ(one("SELECT notes FROM call_activities WHERE prospect_id = $1"), hostile);
  EXPECT_EQ(one("SELECT next_steps FROM call_activities WHERE prospect_id = $1"), hostile);
  EXPECT_EQ(one("SELECT sales_status FROM prospects WHERE id = $1"), "replied");
  EXPECT_EQ(db.count("SELECT count(*) FROM outreach_activities"), 6);

  // Drain so that everything the worker had to say is in the log.
  worker.process().signal(SIGTERM);
  ASSERT_TRUE(worker.process().wait(30s).has_value());
  EXPECT_TRUE(trap.requests().empty()) << "a URL from an event was fetched";

  const std::string log = worker.process().log();
  EXPECT_NE(log.find("FAKE-INJECTED"), std::string::npos)
      << "the hostile text should have reached the log (escaped): the check below would prove "
         "nothing";
  EXPECT_EQ(log.find("\xe2\x80\xae"), std::string::npos)
      << "a raw U+202E can reorder how a log line reads";
  const std::regex text_record(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (debug|info|warn|error) .*)");
  std::istringstream lines(log);
  int records = 0;
  for (std::string line; std::getline(lines, line);) {
    ++records;
    EXPECT_EQ(line.find('\r'), std::string::npos) << line;
    for (char ch : line) {
      const auto u = static_cast<unsigned char>(ch);
      EXPECT_FALSE(u < 0x20 || u == 0x7f) << "raw control character " << int(u) << " in: " << line;
    }
    if (format == "json") {
      json::error_code ec;
      const json::value v = json::parse(line, ec);
      ASSERT_FALSE(ec) << "not one JSON record: " << line;
      ASSERT_TRUE(v.is_object()) << line;
      const json::value* ts = v.as_object().if_contains("ts");
      const json::value* msg = v.as_object().if_contains("msg");
      ASSERT_TRUE(ts && ts->is_string() && msg && msg->is_string())
          << "not the worker's record: " << line;
      EXPECT_NE(msg->get_string(), "FAKE-INJECTED") << line;
      EXPECT_NE(ts->get_string().subview().substr(0, 4), "1999") << line;
    } else {
      EXPECT_TRUE(std::regex_match(line, text_record)) << "not one text record: " << line;
      EXPECT_NE(line.rfind("1999", 0), 0u) << line;
    }
  }
  EXPECT_GT(records, 5);
}

INSTANTIATE_TEST_SUITE_P(LogFormats, HostileValues, ::testing::Values("json", "text"));

}  // namespace
}  // namespace crm::test
