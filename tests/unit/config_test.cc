// The configuration contract (SPEC.md §3): defaults without a file, the file,
// then the environment; every problem reported at once with file, line and
// key; secrets only from the environment or credentials and never printed.

#include "daemon/config.h"
#include "tests/harness/source_tree.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace crm {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "crm-config-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& content) const {
    const fs::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << content;
    return file.string();
  }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

class ConfigTest : public ::testing::Test {
 protected:
  ConfigLoadResult load_text(const std::string& toml, const Environment& env = {}) {
    path_ = dir_.write("crm-worker.toml", toml);
    return load_config(path_, env);
  }

  static std::string all_errors(const ConfigLoadResult& r) {
    std::string out;
    for (const ConfigError& e : r.errors) out += e.to_string() + "\n";
    return out;
  }

  // The one error for `key`; fails the test if there is not exactly one.
  static ConfigError error_for(const ConfigLoadResult& r, const std::string& key) {
    const ConfigError* found = nullptr;
    int count = 0;
    for (const ConfigError& e : r.errors) {
      if (e.key == key) {
        found = &e;
        ++count;
      }
    }
    EXPECT_EQ(count, 1) << "errors for " << key << " in:\n" << all_errors(r);
    return found ? *found : ConfigError{};
  }

  TempDir dir_;
  std::string path_;
};

using test::read_file;
using test::source_root;

// --- defaults --------------------------------------------------------------------

TEST_F(ConfigTest, DefaultsNeedNoFile) {
  const ConfigLoadResult r = load_config("", {});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  const Config& c = r.config;
  EXPECT_EQ(c.source_file, "(defaults)");
  EXPECT_EQ(c.kafka.brokers, "embedded");
  EXPECT_EQ(c.kafka.group_id, "crm-worker");
  EXPECT_EQ(c.kafka.topics.outreach, "crm.outreach.events");
  EXPECT_EQ(c.kafka.topics.sync, "crm.sync.jobs");
  EXPECT_EQ(c.kafka.topics.followups, "crm.followups");
  EXPECT_EQ(c.kafka.topics.sendgrid, "sendgrid.events");
  EXPECT_EQ(c.kafka.topics.dead_letter, "crm.dead-letter");
  EXPECT_TRUE(c.kafka.properties.empty());
  EXPECT_EQ(c.database.url, "postgresql:///crm");
  EXPECT_EQ(c.hubspot.base_url, "https://api.hubapi.com");
  EXPECT_EQ(c.hubspot.id_property, "crm_id");
  EXPECT_EQ(c.hubspot.requests_per_10s, 100);
  EXPECT_EQ(c.sendgrid.base_url, "https://api.sendgrid.com");
  EXPECT_FALSE(c.slack.webhook_url.is_set());
  EXPECT_FALSE(c.hubspot.token.is_set());
  EXPECT_EQ(c.hubspot.timeout, Millis{10000});
  EXPECT_EQ(c.hubspot.batch_size, 100);
  EXPECT_EQ(c.hubspot.deal_pipeline, "default");
  EXPECT_EQ(c.hubspot.deal_stages.at("closed_won"), "closedwon");
  EXPECT_EQ(c.hubspot.deal_stages.at("closed_lost"), "closedlost");
  EXPECT_FALSE(c.sendgrid.api_key.is_set());
  EXPECT_FALSE(c.database.password.is_set());
  EXPECT_EQ(c.http.listen, "127.0.0.1:9464");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, "json");
  EXPECT_EQ(c.retry.max_attempts, 10);
  EXPECT_EQ(c.retry.initial_backoff, Millis{1000});
  EXPECT_EQ(c.retry.max_backoff, Millis{600000});
  EXPECT_EQ(c.followups.email_sequence,
            (std::vector<Millis>{Millis{3LL * 86400000}, Millis{7LL * 86400000}}));
}

TEST_F(ConfigTest, EmptyFileGivesDefaults) {
  const ConfigLoadResult r = load_text("# nothing\n");
  ASSERT_TRUE(r.ok()) << all_errors(r);
  Config expected;
  expected.source_file = path_;
  EXPECT_TRUE(r.config == expected) << render_effective(r.config);
}

// --- the file ------------------------------------------------------------------------

TEST_F(ConfigTest, FileSetsEveryKind) {
  const ConfigLoadResult r = load_text(R"(
[kafka]
brokers = "k1:9092,k2:9092"
group_id = "g"
embedded_partitions = 3
embedded_port_file = "/run/port"
topics.outreach = "o"
topics.dead_letter = "dl"

[kafka.properties]
"session.timeout.ms" = 6000
"enable.partition.eof" = false
"security.protocol" = "SSL"

[database]
url = "host=db dbname=crm"
pool_size = 8
connect_timeout = "3s"

[hubspot]
base_url = "http://127.0.0.1:8080"
id_property = "my_id"
requests_per_10s = 50
timeout = "3s"
batch_size = 25
deal_pipeline = "12345"

[hubspot.deal_stages]
proposal = "presentationscheduled"
closed_won = "closedwon"

[sendgrid]
base_url = "http://127.0.0.1:8081"

[http]
listen = "[::1]:0"

[log]
level = "debug"
format = "text"

[retry]
max_attempts = 3
initial_backoff = "250ms"
max_backoff = "2h"

[followups]
email_sequence = ["90s", "1d", "36h"]
stale_deal_after = "0s"
send_window = "09:30-17:00"
send_on_weekends = true
default_time_zone = "Europe/Berlin"
prospect_wait = "20m"

[consumer]
batch_max_events = 100
batch_max_wait = "0ms"
drain_timeout = "5s"
max_message_bytes = 4096
max_json_depth = 8
max_string_bytes = 1024
max_batch_elements = 7
crash_attempts = 5
)");
  ASSERT_TRUE(r.ok()) << all_errors(r);
  const Config& c = r.config;
  EXPECT_EQ(c.source_file, path_);
  EXPECT_EQ(c.kafka.brokers, "k1:9092,k2:9092");
  EXPECT_EQ(c.kafka.group_id, "g");
  EXPECT_EQ(c.kafka.embedded_partitions, 3);
  EXPECT_EQ(c.kafka.embedded_port_file, "/run/port");
  EXPECT_EQ(c.kafka.topics.outreach, "o");
  EXPECT_EQ(c.kafka.topics.sync, "crm.sync.jobs");
  EXPECT_EQ(c.kafka.topics.dead_letter, "dl");
  EXPECT_EQ(c.kafka.properties, (std::map<std::string, std::string>{
                                    {"session.timeout.ms", "6000"},
                                    {"enable.partition.eof", "false"},
                                    {"security.protocol", "SSL"}}));
  EXPECT_EQ(c.database.url, "host=db dbname=crm");
  EXPECT_EQ(c.database.pool_size, 8);
  EXPECT_EQ(c.database.connect_timeout, Millis{3000});
  EXPECT_EQ(c.hubspot.base_url, "http://127.0.0.1:8080");
  EXPECT_EQ(c.hubspot.id_property, "my_id");
  EXPECT_EQ(c.hubspot.requests_per_10s, 50);
  EXPECT_EQ(c.hubspot.timeout, Millis{3000});
  EXPECT_EQ(c.hubspot.batch_size, 25);
  EXPECT_EQ(c.hubspot.deal_pipeline, "12345");
  // The table replaces the default map: closed_lost is no longer mapped.
  EXPECT_EQ(c.hubspot.deal_stages, (std::map<std::string, std::string>{
                                       {"proposal", "presentationscheduled"},
                                       {"closed_won", "closedwon"}}));
  EXPECT_EQ(c.sendgrid.base_url, "http://127.0.0.1:8081");
  EXPECT_EQ(c.http.listen, "[::1]:0");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.format, "text");
  EXPECT_EQ(c.retry.max_attempts, 3);
  EXPECT_EQ(c.retry.initial_backoff, Millis{250});
  EXPECT_EQ(c.retry.max_backoff, Millis{7200000});
  EXPECT_EQ(c.followups.email_sequence,
            (std::vector<Millis>{Millis{90000}, Millis{86400000}, Millis{36LL * 3600000}}));
  EXPECT_EQ(c.followups.stale_deal_after, Millis{0});
  EXPECT_EQ(c.followups.send_window, "09:30-17:00");
  EXPECT_TRUE(c.followups.send_on_weekends);
  EXPECT_EQ(c.followups.default_time_zone, "Europe/Berlin");
  EXPECT_EQ(c.followups.prospect_wait, Millis{20 * 60 * 1000});
  EXPECT_EQ(c.consumer.batch_max_events, 100);
  EXPECT_EQ(c.consumer.batch_max_wait, Millis{0});
  EXPECT_EQ(c.consumer.drain_timeout, Millis{5000});
  EXPECT_EQ(c.consumer.max_message_bytes, 4096);
  EXPECT_EQ(c.consumer.max_json_depth, 8);
  EXPECT_EQ(c.consumer.max_string_bytes, 1024);
  EXPECT_EQ(c.consumer.max_batch_elements, 7);
  EXPECT_EQ(c.consumer.crash_attempts, 5);
}

TEST_F(ConfigTest, EmptyEmailSequenceTurnsFollowupsOff) {
  const ConfigLoadResult r = load_text("[followups]\nemail_sequence = []\n");
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_TRUE(r.config.followups.email_sequence.empty());
}

TEST_F(ConfigTest, FollowupRulesAreCheckedNamingTheKey) {
  const ConfigLoadResult r = load_text(
      "[followups]\n"
      "email_sequence = [\"7d\", \"3d\"]\n"
      "send_window = \"20:00-08:00\"\n"
      "default_time_zone = \"Mars/Olympus\"\n");
  EXPECT_EQ(r.errors.size(), 3u) << all_errors(r);
  EXPECT_EQ(error_for(r, "followups.email_sequence").message,
            "delays must grow (each counts from the original email), got 7d then 3d");
  EXPECT_EQ(error_for(r, "followups.send_window").line, 3);
  EXPECT_EQ(error_for(r, "followups.default_time_zone").line, 4);
  for (const char* bad : {"8:00-20:00", "08:00-08:00", "08:00-24:01", "08:60-09:00", "08:00 20:00",
                          "../../etc/passwd"}) {
    EXPECT_FALSE(parse_send_window(bad).has_value()) << bad;
  }
  EXPECT_EQ(parse_send_window("00:00-24:00"), std::make_pair(0, 1440));
  EXPECT_EQ(parse_send_window("08:30-20:00"), std::make_pair(510, 1200));
  // A path out of the zone directory is not a zone.
  EXPECT_FALSE(load_text("[followups]\ndefault_time_zone = \"../../etc/passwd\"\n").ok());
}

TEST_F(ConfigTest, SecretsWithControlCharactersAreRefusedWithoutShowingThem) {
  const ConfigLoadResult r =
      load_config("", {{"CRM_WORKER_SENDGRID_API_KEY", "SG.canary-key\nX-Injected: 1"}});
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].key, "sendgrid.api_key");
  EXPECT_EQ(r.errors[0].to_string().find("canary"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileIsAnErrorNamingIt) {
  const std::string missing = dir_.path() + "/nope.toml";
  const ConfigLoadResult r = load_config(missing, {});
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].file, missing);
  EXPECT_NE(r.errors[0].to_string().find(missing), std::string::npos);
  EXPECT_NE(r.errors[0].message.find("No such file"), std::string::npos) << r.errors[0].message;
}

TEST_F(ConfigTest, DirectoryInsteadOfFileIsAnError) {
  const ConfigLoadResult r = load_config(dir_.path(), {});
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].file, dir_.path());
}

TEST_F(ConfigTest, SyntaxErrorHasItsLine) {
  const ConfigLoadResult r = load_text("[log]\nlevel = \"info\"\nformat = json\n");
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].file, path_);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_TRUE(r.errors[0].key.empty());
}

// toml++ quotes the input it stopped at, a newline or a terminal escape
// included; the error must still be one line (found by fuzz/config_fuzz.cc).
TEST_F(ConfigTest, SyntaxErrorIsOneLineWhateverTheFileHolds) {
  for (const char* text : {"[executors]\nenabled = tr\n", "[executors]\nenabled = t\x1b[2J\n"}) {
    const ConfigLoadResult r = load_text(text);
    ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
    EXPECT_EQ(r.errors[0].line, 2);
    const std::string line = r.errors[0].to_string();
    EXPECT_EQ(line.find_first_of("\r\n\x1b"), std::string::npos) << line;
  }
  EXPECT_NE(load_text("[executors]\nenabled = tr\n").errors[0].message.find("saw 'tr\\n'"),
            std::string::npos);
}

TEST_F(ConfigTest, DuplicateKeyIsASyntaxError) {
  const ConfigLoadResult r = load_text("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].line, 3);
}

// --- errors ------------------------------------------------------------------------

TEST_F(ConfigTest, UnknownKeysHaveFileLineAndSuggestion) {
  const ConfigLoadResult r = load_text(
      "[database]\n"
      "pool_sise = 4\n"
      "\n"
      "[databse]\n"
      "url = \"x\"\n"
      "[kafka.topics]\n"
      "events = \"x\"\n");
  EXPECT_EQ(r.errors.size(), 3u) << all_errors(r);
  const ConfigError typo = error_for(r, "database.pool_sise");
  EXPECT_EQ(typo.file, path_);
  EXPECT_EQ(typo.line, 2);
  EXPECT_NE(typo.message.find("unknown key"), std::string::npos);
  EXPECT_NE(typo.message.find("pool_size"), std::string::npos) << typo.message;
  const ConfigError section = error_for(r, "databse");
  EXPECT_EQ(section.line, 4);
  EXPECT_NE(section.message.find("database"), std::string::npos);
  EXPECT_EQ(error_for(r, "kafka.topics.events").line, 7);
  // Errors read top to bottom.
  EXPECT_EQ(r.errors[0].line, 2);
  EXPECT_EQ(r.errors[1].line, 4);
  EXPECT_EQ(r.errors[2].line, 7);
}

TEST_F(ConfigTest, WrongTypesSayWhatWasExpected) {
  const ConfigLoadResult r = load_text(
      "[database]\n"
      "connect_timeout = 5\n"
      "pool_size = \"4\"\n"
      "url = 5\n"
      "[retry]\n"
      "max_attempts = 2.5\n"
      "[followups]\n"
      "email_sequence = \"3d\"\n"
      "[log]\n"
      "level = true\n"
      "http = 1\n");
  EXPECT_EQ(r.errors.size(), 7u) << all_errors(r);
  const ConfigError timeout = error_for(r, "database.connect_timeout");
  EXPECT_EQ(timeout.line, 2);
  EXPECT_EQ(timeout.message, "expected a duration string like \"5s\", got integer");
  EXPECT_EQ(error_for(r, "database.pool_size").message, "expected an integer, got string");
  EXPECT_EQ(error_for(r, "database.url").message, "expected a string, got integer");
  EXPECT_EQ(error_for(r, "retry.max_attempts").message, "expected an integer, got float");
  EXPECT_EQ(error_for(r, "followups.email_sequence").line, 8);
  EXPECT_EQ(error_for(r, "log.level").message, "expected a string, got boolean");
  EXPECT_EQ(error_for(r, "log.http").line, 11);
}

TEST_F(ConfigTest, SectionThatIsNotATableIsATypeError) {
  const ConfigLoadResult r = load_text("kafka = \"localhost:9092\"\n");
  EXPECT_EQ(error_for(r, "kafka").message, "expected a table, got string");
  EXPECT_EQ(error_for(r, "kafka").line, 1);
}

TEST_F(ConfigTest, OutOfRangeValuesNameTheBound) {
  const ConfigLoadResult r = load_text(
      "[database]\n"
      "pool_size = 0\n"
      "[hubspot]\n"
      "requests_per_10s = 10001\n"
      "[retry]\n"
      "max_attempts = 1001\n"
      "[consumer]\n"
      "batch_max_events = 0\n"
      "max_json_depth = 1\n"
      "max_batch_elements = 99999999999999\n");
  EXPECT_EQ(r.errors.size(), 6u) << all_errors(r);
  EXPECT_EQ(error_for(r, "database.pool_size").message, "must be between 1 and 64, got 0");
  EXPECT_EQ(error_for(r, "database.pool_size").line, 2);
  EXPECT_EQ(error_for(r, "hubspot.requests_per_10s").message,
            "must be between 1 and 10000, got 10001");
  EXPECT_EQ(error_for(r, "retry.max_attempts").message, "must be between 1 and 1000, got 1001");
  EXPECT_EQ(error_for(r, "consumer.batch_max_events").message,
            "must be between 1 and 10000, got 0");
  EXPECT_EQ(error_for(r, "consumer.max_json_depth").message, "must be between 2 and 512, got 1");
  EXPECT_EQ(error_for(r, "consumer.max_batch_elements").line, 10);
  // Out-of-range values do not replace the default.
  EXPECT_EQ(r.config.database.pool_size, 2);
}

TEST_F(ConfigTest, BoundariesAreInclusive) {
  const ConfigLoadResult r = load_text(
      "database.pool_size = 64\n"
      "hubspot.requests_per_10s = 1\n"
      "retry.max_attempts = 1000\n"
      "consumer.batch_max_events = 10000\n"
      "consumer.max_json_depth = 2\n"
      "http.listen = \"localhost:65535\"\n");
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.database.pool_size, 64);
  EXPECT_EQ(r.config.consumer.max_json_depth, 2);
}

TEST_F(ConfigTest, BadDurationsAreReported) {
  const ConfigLoadResult r = load_text(
      "[retry]\n"
      "initial_backoff = \"5\"\n"
      "max_backoff = \"1.5s\"\n"
      "[followups]\n"
      "email_sequence = [\"3d\", \"soon\", 7]\n"
      "[database]\n"
      "connect_timeout = \"2d\"\n");
  EXPECT_EQ(r.errors.size(), 5u) << all_errors(r);
  const ConfigError initial = error_for(r, "retry.initial_backoff");
  EXPECT_EQ(initial.line, 2);
  EXPECT_NE(initial.message.find("invalid duration \"5\""), std::string::npos) << initial.message;
  EXPECT_EQ(error_for(r, "retry.max_backoff").line, 3);
  EXPECT_EQ(error_for(r, "followups.email_sequence[1]").line, 5);
  EXPECT_EQ(error_for(r, "followups.email_sequence[2]").message,
            "expected a duration string like \"5s\", got integer");
  EXPECT_EQ(error_for(r, "database.connect_timeout").message,
            "must be between 1s and 1h, got \"2d\"");
  // A list with a bad element is not half applied.
  EXPECT_EQ(r.config.followups.email_sequence, Config{}.followups.email_sequence);
}

TEST_F(ConfigTest, InitialBackoffMustNotExceedMaxBackoff) {
  const ConfigLoadResult r = load_text("[retry]\ninitial_backoff = \"2m\"\nmax_backoff = \"1m\"\n");
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
  EXPECT_EQ(r.errors[0].key, "retry.initial_backoff");
  EXPECT_EQ(r.errors[0].line, 2);
  EXPECT_NE(r.errors[0].message.find("1m"), std::string::npos) << r.errors[0].message;
}

TEST_F(ConfigTest, MaxStringBytesMustNotExceedMaxMessageBytes) {
  const ConfigLoadResult r = load_text(
      "[consumer]\nmax_message_bytes = 2048\nmax_string_bytes = 4096\n");
  EXPECT_EQ(error_for(r, "consumer.max_string_bytes").line, 3);
}

TEST_F(ConfigTest, HttpListenMustBeHostAndPort) {
  for (const char* good : {"127.0.0.1:9464", "0.0.0.0:0", "[::1]:9464", "[::]:65535",
                           "localhost:80"}) {
    const ConfigLoadResult r = load_config("", {{"CRM_WORKER_HTTP_LISTEN", good}});
    EXPECT_TRUE(r.ok()) << good << "\n" << all_errors(r);
  }
  for (const char* bad : {"9464", "127.0.0.1", "127.0.0.1:", ":9464", "::1:9464", "[::1]9464",
                          "[::1]:", "[]:80", "host:65536", "host:99999999", "host:-1",
                          "host:http"}) {
    const ConfigLoadResult r = load_config("", {{"CRM_WORKER_HTTP_LISTEN", bad}});
    ASSERT_EQ(r.errors.size(), 1u) << bad;
    EXPECT_EQ(r.errors[0].key, "http.listen");
  }
  const ConfigLoadResult v6 = load_config("", {{"CRM_WORKER_HTTP_LISTEN", "::1:9464"}});
  EXPECT_NE(v6.errors.at(0).message.find("[::1]:9464"), std::string::npos);
}

TEST_F(ConfigTest, LevelFormatBrokersAndTopicsAreChecked) {
  const ConfigLoadResult r = load_text(
      "[log]\n"
      "level = \"verbose\"\n"
      "format = \"xml\"\n"
      "[kafka]\n"
      "brokers = \"\"\n"
      "group_id = \"\"\n"
      "[kafka.topics]\n"
      "sync = \"has space\"\n"
      "dead_letter = \"crm.outreach.events\"\n"
      "[hubspot]\n"
      "base_url = \"api.hubapi.com\"\n");
  EXPECT_EQ(r.errors.size(), 7u) << all_errors(r);
  EXPECT_EQ(error_for(r, "log.level").line, 2);
  EXPECT_NE(error_for(r, "log.level").message.find("debug, info, warn, error"),
            std::string::npos);
  EXPECT_EQ(error_for(r, "log.format").line, 3);
  EXPECT_EQ(error_for(r, "kafka.brokers").line, 5);
  EXPECT_EQ(error_for(r, "kafka.group_id").line, 6);
  EXPECT_EQ(error_for(r, "kafka.topics.sync").line, 8);
  EXPECT_NE(error_for(r, "kafka.topics.dead_letter").message.find("kafka.topics.outreach"),
            std::string::npos);
  EXPECT_EQ(error_for(r, "hubspot.base_url").line, 11);
}

TEST_F(ConfigTest, ManyErrorsAreReportedAtOnceInLineOrder) {
  const ConfigLoadResult r = load_text(
      "[database]\n"                      // 1
      "pool_size = 100\n"                 // 2
      "colour = \"blue\"\n"               // 3
      "[log]\n"                           // 4
      "level = \"loud\"\n"                // 5
      "[retry]\n"                         // 6
      "initial_backoff = 1\n"             // 7
      "[hubspot]\n"                       // 8
      "token = \"secret-in-file\"\n",     // 9
      {{"CRM_WORKER_LOG_FORMAT", "yaml"}});
  ASSERT_EQ(r.errors.size(), 6u) << all_errors(r);
  std::vector<int> lines;
  for (const ConfigError& e : r.errors) lines.push_back(e.line);
  EXPECT_EQ(lines, (std::vector<int>{2, 3, 5, 7, 9, 0}));
  EXPECT_EQ(r.errors[5].file, "CRM_WORKER_LOG_FORMAT");
}

// --- environment -----------------------------------------------------------------------

TEST_F(ConfigTest, EnvironmentOverridesFile) {
  const ConfigLoadResult r = load_text(
      "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"file-group\"\n"
      "[database]\nurl = \"postgresql:///file\"\n"
      "[http]\nlisten = \"127.0.0.1:1\"\n"
      "[log]\nlevel = \"debug\"\nformat = \"text\"\n",
      {{"CRM_WORKER_KAFKA_BROKERS", "env:9092"},
       {"CRM_WORKER_KAFKA_GROUP_ID", "env-group"},
       {"CRM_WORKER_DATABASE_URL", "postgresql:///env"},
       {"CRM_WORKER_HTTP_LISTEN", "127.0.0.1:2"},
       {"CRM_WORKER_LOG_LEVEL", "warn"},
       {"CRM_WORKER_LOG_FORMAT", "json"}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.kafka.brokers, "env:9092");
  EXPECT_EQ(r.config.kafka.group_id, "env-group");
  EXPECT_EQ(r.config.database.url, "postgresql:///env");
  EXPECT_EQ(r.config.http.listen, "127.0.0.1:2");
  EXPECT_EQ(r.config.log.level, "warn");
  EXPECT_EQ(r.config.log.format, "json");
}

TEST_F(ConfigTest, FileWinsOverDefaultsWhenEnvironmentIsSilent) {
  const ConfigLoadResult r = load_text("[log]\nlevel = \"debug\"\n",
                                       {{"CRM_WORKER_LOG_LEVEL", ""}, {"UNRELATED", "x"}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.log.level, "debug");
}

TEST_F(ConfigTest, BadEnvironmentValueNamesTheVariable) {
  const ConfigLoadResult r = load_config(
      "", {{"CRM_WORKER_LOG_LEVEL", "chatty"}, {"CRM_WORKER_HTTP_LISTEN", "nowhere"}});
  ASSERT_EQ(r.errors.size(), 2u) << all_errors(r);
  const ConfigError level = error_for(r, "log.level");
  EXPECT_EQ(level.file, "CRM_WORKER_LOG_LEVEL");
  EXPECT_EQ(level.line, 0);
  EXPECT_EQ(level.to_string().rfind("CRM_WORKER_LOG_LEVEL: log.level: ", 0), 0u)
      << level.to_string();
  EXPECT_EQ(error_for(r, "http.listen").file, "CRM_WORKER_HTTP_LISTEN");
}

TEST(ConfigError, ToStringFormat) {
  EXPECT_EQ((ConfigError{"/etc/c.toml", 12, "log.level", "bad"}).to_string(),
            "/etc/c.toml:12: log.level: bad");
  EXPECT_EQ((ConfigError{"CRM_WORKER_LOG_LEVEL", 0, "log.level", "bad"}).to_string(),
            "CRM_WORKER_LOG_LEVEL: log.level: bad");
  EXPECT_EQ((ConfigError{"/etc/c.toml", 3, "", "syntax"}).to_string(), "/etc/c.toml:3: syntax");
}

TEST(ConfigEnvironment, ProcessEnvironmentReadsEnviron) {
  ::setenv("CRM_CONFIG_TEST_PROBE", "a=b", 1);
  const Environment env = process_environment();
  ::unsetenv("CRM_CONFIG_TEST_PROBE");
  ASSERT_TRUE(env.count("CRM_CONFIG_TEST_PROBE"));
  EXPECT_EQ(env.at("CRM_CONFIG_TEST_PROBE"), "a=b");
}

// --- kafka.properties ------------------------------------------------------------------

TEST_F(ConfigTest, PropertiesMustBeFlatAndNotReserved) {
  const ConfigLoadResult r = load_text(
      "[kafka.properties]\n"
      "ssl.key.pem = \"x\"\n"
      "\"group.id\" = \"other\"\n"
      "\"enable.auto.commit\" = true\n"
      "\"fetch.wait.max.ms\" = 1.5\n"
      "\"client.id\" = \"ok\"\n");
  EXPECT_EQ(r.errors.size(), 4u) << all_errors(r);
  const ConfigError nested = error_for(r, "kafka.properties.ssl");
  EXPECT_EQ(nested.line, 2);
  EXPECT_NE(nested.message.find("\"ssl.key.pem\""), std::string::npos) << nested.message;
  EXPECT_EQ(error_for(r, "kafka.properties.\"group.id\"").line, 3);
  EXPECT_NE(error_for(r, "kafka.properties.\"group.id\"").message.find("kafka.group_id"),
            std::string::npos);
  EXPECT_EQ(error_for(r, "kafka.properties.\"enable.auto.commit\"").line, 4);
  EXPECT_EQ(error_for(r, "kafka.properties.\"fetch.wait.max.ms\"").line, 5);
  EXPECT_EQ(r.config.kafka.properties.at("client.id"), "ok");
  EXPECT_EQ(r.config.kafka.properties.count("group.id"), 0u);
}

// --- secrets ------------------------------------------------------------------------------

TEST_F(ConfigTest, SecretsComeFromTheEnvironment) {
  const ConfigLoadResult r = load_config("", {{"CRM_WORKER_HUBSPOT_TOKEN", "pat-1"},
                                              {"CRM_WORKER_SENDGRID_API_KEY", "SG.2"},
                                              {"CRM_WORKER_SLACK_WEBHOOK_URL", "https://hooks/3"},
                                              {"CRM_WORKER_KAFKA_SASL_PASSWORD", "kp"}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.hubspot.token.reveal(), "pat-1");
  EXPECT_EQ(r.config.sendgrid.api_key.reveal(), "SG.2");
  EXPECT_EQ(r.config.slack.webhook_url.reveal(), "https://hooks/3");
  EXPECT_EQ(r.config.kafka.properties.at("sasl.password"), "kp");
}

TEST_F(ConfigTest, SecretsComeFromCredentialFiles) {
  TempDir credentials;
  credentials.write("hubspot_token", "pat-from-file\n");
  credentials.write("sendgrid_api_key", "SG.key\r\n");
  credentials.write("slack_webhook_url", "https://hooks.slack.test/x");
  credentials.write("database_password", "pg pass\n\n");  // only one newline is trimmed
  const ConfigLoadResult r = load_config("", {{"CREDENTIALS_DIRECTORY", credentials.path()}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.hubspot.token.reveal(), "pat-from-file");
  EXPECT_EQ(r.config.sendgrid.api_key.reveal(), "SG.key");
  EXPECT_EQ(r.config.slack.webhook_url.reveal(), "https://hooks.slack.test/x");
  EXPECT_EQ(r.config.database.password.reveal(), "pg pass\n");
}

TEST_F(ConfigTest, EnvironmentSecretWinsOverCredential) {
  TempDir credentials;
  credentials.write("hubspot_token", "from-file\n");
  const ConfigLoadResult r = load_config("", {{"CREDENTIALS_DIRECTORY", credentials.path()},
                                              {"CRM_WORKER_HUBSPOT_TOKEN", "from-env"}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  EXPECT_EQ(r.config.hubspot.token.reveal(), "from-env");
  EXPECT_FALSE(r.config.sendgrid.api_key.is_set());
}

TEST_F(ConfigTest, UnsetSecretRevealsEmpty) {
  const Secret none;
  EXPECT_FALSE(none.is_set());
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.reveal(), "");
  EXPECT_EQ(none.masked(), "(unset)");
  EXPECT_EQ(Secret("x").masked(), "****");
}

TEST_F(ConfigTest, SecretInFileIsRejectedWithoutEchoingIt) {
  const ConfigLoadResult r = load_text(
      "[hubspot]\ntoken = \"pat-canary-123\"\n"
      "[sendgrid]\napi_key = \"SG.canary\"\n"
      "[slack]\nwebhook_url = \"https://hooks/canary\"\n");
  ASSERT_EQ(r.errors.size(), 3u) << all_errors(r);
  const ConfigError token = error_for(r, "hubspot.token");
  EXPECT_EQ(token.line, 2);
  EXPECT_NE(token.message.find("CRM_WORKER_HUBSPOT_TOKEN"), std::string::npos);
  EXPECT_NE(token.message.find("hubspot_token"), std::string::npos);
  EXPECT_EQ(error_for(r, "sendgrid.api_key").line, 4);
  EXPECT_EQ(error_for(r, "slack.webhook_url").line, 6);
  EXPECT_EQ(all_errors(r).find("canary"), std::string::npos) << all_errors(r);
  EXPECT_FALSE(r.config.hubspot.token.is_set());
}

TEST_F(ConfigTest, BadSlackWebhookIsReportedWithoutEchoingIt) {
  const ConfigLoadResult r = load_config("", {{"CRM_WORKER_SLACK_WEBHOOK_URL", "canary-value"}});
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].file, "CRM_WORKER_SLACK_WEBHOOK_URL");
  EXPECT_EQ(r.errors[0].to_string().find("canary"), std::string::npos);
}

// --- render_effective -----------------------------------------------------------------------

TEST_F(ConfigTest, RenderMasksEverySecret) {
  TempDir credentials;
  credentials.write("database_password", "canary-db\n");
  const ConfigLoadResult r = load_text(
      "[kafka.properties]\n"
      "\"sasl.jaas.config\" = \"canary-jaas\"\n"
      "\"ssl.key.pem\" = \"canary-pem\"\n"
      "\"ssl.keystore.password\" = \"canary-ks\"\n"
      "\"sasl.oauthbearer.client.secret\" = \"canary-oauth\"\n"
      "\"security.protocol\" = \"SASL_SSL\"\n",
      {{"CRM_WORKER_HUBSPOT_TOKEN", "canary-hubspot"},
       {"CRM_WORKER_SENDGRID_API_KEY", "canary-sendgrid"},
       {"CRM_WORKER_SLACK_WEBHOOK_URL", "https://hooks.slack.test/canary-slack"},
       {"CRM_WORKER_KAFKA_SASL_PASSWORD", "canary-sasl"},
       {"CRM_WORKER_DATABASE_URL", "postgresql://crm:canary-url@db/crm"},
       {"CREDENTIALS_DIRECTORY", credentials.path()}});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  const std::string text = render_effective(r.config);
  EXPECT_EQ(text.find("canary"), std::string::npos) << text;
  EXPECT_NE(text.find("url = \"postgresql://crm:****@db/crm\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"security.protocol\" = \"SASL_SSL\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"sasl.password\" = \"****\""), std::string::npos) << text;
  EXPECT_NE(text.find("# token: ****"), std::string::npos) << text;

  // The masked output is still a valid configuration.
  EXPECT_TRUE(load_text(text).ok()) << all_errors(load_text(text)) << text;
}

TEST_F(ConfigTest, RenderShowsUnsetSecrets) {
  const std::string text = render_effective(Config{});
  EXPECT_NE(text.find("# webhook_url: (unset)"), std::string::npos) << text;
}

TEST_F(ConfigTest, RenderRoundTripsThroughLoad) {
  Config original;
  original.kafka.brokers = "a:1,b:2";
  original.kafka.group_id = "g \"quoted\" \\ and\ttab";
  original.kafka.topics.sync = "s";
  original.kafka.properties = {{"session.timeout.ms", "6000"}, {"client_id_bare", "x"}};
  original.kafka.embedded_partitions = 1;
  original.kafka.embedded_port_file = "/tmp/ünïcode port";
  original.database.url = "host=db dbname=crm user=me";
  original.database.pool_size = 64;
  original.database.connect_timeout = Millis{1500};
  original.hubspot.base_url = "http://127.0.0.1:1";
  original.hubspot.id_property = "id";
  original.hubspot.requests_per_10s = 1;
  original.sendgrid.base_url = "http://127.0.0.1:2";
  original.http.listen = "[::1]:0";
  original.log = {"error", "text"};
  original.retry = {1, Millis{1}, Millis{7LL * 86400000}};
  original.followups.email_sequence = {};
  original.consumer = {1, Millis{0}, Millis{1}, 1024, 512, 1, 1000000};

  const std::string text = render_effective(original);
  const ConfigLoadResult r = load_text(text);
  ASSERT_TRUE(r.ok()) << all_errors(r) << text;
  original.source_file = path_;
  EXPECT_TRUE(r.config == original) << "rendered:\n" << text << "reloaded:\n"
                                    << render_effective(r.config);
  // And the defaults.
  const ConfigLoadResult defaults = load_text(render_effective(Config{}));
  ASSERT_TRUE(defaults.ok()) << all_errors(defaults);
  Config expected;
  expected.source_file = path_;
  EXPECT_TRUE(defaults.config == expected) << render_effective(defaults.config);
}

TEST_F(ConfigTest, RenderQuotesControlCharacters) {
  Config c;
  c.kafka.embedded_port_file = "line\nbreak\x01\x7f";
  c.source_file = "evil\nkey = 1";
  const std::string text = render_effective(c);
  const ConfigLoadResult r = load_text(text);
  ASSERT_TRUE(r.ok()) << all_errors(r) << text;
  EXPECT_EQ(r.config.kafka.embedded_port_file, c.kafka.embedded_port_file);
}

// --- mask_database_url ----------------------------------------------------------------------

TEST(ConfigMask, UriPasswords) {
  EXPECT_EQ(mask_database_url("postgresql://user:secret@host:5432/db"),
            "postgresql://user:****@host:5432/db");
  EXPECT_EQ(mask_database_url("postgres://user:secret@host/db?sslmode=require"),
            "postgres://user:****@host/db?sslmode=require");
  EXPECT_EQ(mask_database_url("postgresql://user@host/db"), "postgresql://user@host/db");
  EXPECT_EQ(mask_database_url("postgresql:///crm"), "postgresql:///crm");
  EXPECT_EQ(mask_database_url("postgresql://host:5432/db"), "postgresql://host:5432/db");
  EXPECT_EQ(mask_database_url("postgresql://host/db?user=u&password=secret&sslmode=verify-full"),
            "postgresql://host/db?user=u&password=****&sslmode=verify-full");
  EXPECT_EQ(mask_database_url("postgresql://host/db?sslpassword=secret"),
            "postgresql://host/db?sslpassword=****");
  EXPECT_EQ(mask_database_url("POSTGRESQL://u:secret@h/d"), "POSTGRESQL://u:****@h/d");
}

TEST(ConfigMask, UriPasswordWithUnescapedSpecialCharactersDoesNotLeak) {
  for (const char* url : {"postgresql://u:se/cret@h/db", "postgresql://u:se@cret@h/db",
                          "postgresql://u:se?cret@h/db"}) {
    const std::string masked = mask_database_url(url);
    EXPECT_EQ(masked.find("cret"), std::string::npos) << masked;
    EXPECT_EQ(masked.find("se"), std::string::npos) << masked;
  }
}

TEST(ConfigMask, KeywordPasswords) {
  EXPECT_EQ(mask_database_url("host=db user=crm password=secret dbname=crm"),
            "host=db user=crm password=**** dbname=crm");
  EXPECT_EQ(mask_database_url("password='sec ret \\' x' host=db"), "password=**** host=db");
  EXPECT_EQ(mask_database_url("host=db password = secret"), "host=db password = ****");
  EXPECT_EQ(mask_database_url("host=db PASSWORD=secret"), "host=db PASSWORD=****");
  EXPECT_EQ(mask_database_url("host=db sslpassword=secret"), "host=db sslpassword=****");
  EXPECT_EQ(mask_database_url("host=db dbname=crm"), "host=db dbname=crm");
  EXPECT_EQ(mask_database_url("dbname=crm "), "dbname=crm ");
  EXPECT_EQ(mask_database_url(""), "");
}

TEST(ConfigMask, MalformedConninfoIsMaskedRatherThanLeaked) {
  const std::string masked = mask_database_url("host=db password secret");
  EXPECT_EQ(masked.find("secret"), std::string::npos) << masked;
}

// --- the shipped example ----------------------------------------------------------------------

// The example's settings are written "#key = value" and "#[section]"; prose
// comments start with "# ". Uncommenting the settings must change nothing.
std::string uncomment_settings(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 1 && line[0] == '#' && (std::isalpha(static_cast<unsigned char>(line[1])) ||
                                              line[1] == '[')) {
      line.erase(0, 1);
    }
    out += line + "\n";
  }
  return out;
}

// "section/key = value" for every setting line.
std::set<std::string> setting_lines(const std::string& text) {
  std::istringstream in(text);
  std::set<std::string> out;
  std::string section;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line;
    } else {
      out.insert(section + "/" + line);
    }
  }
  return out;
}

TEST_F(ConfigTest, ShippedExampleChangesNothing) {
  const fs::path example = source_root() / "deploy" / "crm-worker.toml.example";
  ASSERT_TRUE(fs::exists(example)) << example;
  const ConfigLoadResult r = load_config(example.string(), {});
  ASSERT_TRUE(r.ok()) << all_errors(r);
  Config expected;
  expected.source_file = example.string();
  EXPECT_TRUE(r.config == expected) << render_effective(r.config);
}

TEST_F(ConfigTest, ShippedExampleUncommentedShowsEveryDefault) {
  const fs::path example = source_root() / "deploy" / "crm-worker.toml.example";
  const std::string uncommented = uncomment_settings(read_file(example));
  const ConfigLoadResult r = load_text(uncommented);
  ASSERT_TRUE(r.ok()) << all_errors(r) << uncommented;
  Config expected;
  expected.source_file = path_;
  EXPECT_TRUE(r.config == expected) << render_effective(r.config);

  // Every key check-config prints is documented in the example.
  const std::set<std::string> documented = setting_lines(uncommented);
  for (const std::string& line : setting_lines(render_effective(Config{}))) {
    EXPECT_TRUE(documented.count(line)) << "not in the example: " << line;
  }
}

TEST_F(ConfigTest, HubspotStagesMapBothWaysAndBatchesAreCapped) {
  const ConfigLoadResult r = load_text(
      "[hubspot]\n"
      "batch_size = 101\n"
      "deal_pipeline = \"\"\n"
      "[hubspot.deal_stages]\n"
      "closed_won = \"closedwon\"\n"
      "won = \"closedwon\"\n"
      "lost = 3\n");
  EXPECT_EQ(error_for(r, "hubspot.batch_size").message, "must be between 1 and 100, got 101");
  EXPECT_EQ(error_for(r, "hubspot.deal_stages.lost").message, "expected a string, got integer");
  const ConfigLoadResult mapped = load_text(
      "[hubspot]\n"
      "deal_pipeline = \"\"\n"
      "[hubspot.deal_stages]\n"
      "closed_won = \"closedwon\"\n"
      "won = \"closedwon\"\n");
  EXPECT_EQ(error_for(mapped, "hubspot.deal_pipeline").message, "must not be empty");
  EXPECT_EQ(error_for(mapped, "hubspot.deal_stages").message,
            "stages \"closed_won\" and \"won\" both map to \"closedwon\"");
}

}  // namespace
}  // namespace crm
