#pragma once
// The one typed configuration of crm-worker (SPEC.md §3).
//
// Sources, later ones win: built-in defaults, the TOML file, environment
// variables. Secrets come only from the environment or from systemd
// credential files ($CREDENTIALS_DIRECTORY/<name>), never from the TOML file,
// and are never printed: `render_effective()` masks them.
//
// Loaded once on the main thread at start (and again on SIGHUP for the log
// level only); the rest of the program receives a const reference.

#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <utility>
#include <string>
#include <vector>

#include "daemon/core/time.h"

namespace crm {

// A secret value. Holds the text but prints only "****" (or "(unset)").
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  bool empty() const { return !value_ || value_->empty(); }
  bool is_set() const { return value_.has_value(); }
  const std::string& reveal() const;  // for the HTTP client only
  std::string masked() const { return is_set() ? "****" : "(unset)"; }
  friend bool operator==(const Secret&, const Secret&) = default;

 private:
  std::optional<std::string> value_;
};

struct KafkaTopics {
  std::string outreach = "crm.outreach.events";
  std::string sync = "crm.sync.jobs";
  std::string followups = "crm.followups";
  std::string sendgrid = "sendgrid.events";
  std::string dead_letter = "crm.dead-letter";
  bool operator==(const KafkaTopics&) const = default;
};

struct KafkaConfig {
  // "embedded" runs librdkafka's mock cluster inside the daemon.
  std::string brokers = "embedded";
  std::string group_id = "crm-worker";
  KafkaTopics topics;
  // Passed to librdkafka as is. Values are strings; TOML numbers and
  // booleans are converted ("true", "6000"). Keys whose name suggests a
  // secret (sasl.password, ssl.key.password, ...) are masked when printed.
  // "sasl.password" may also come from CRM_WORKER_KAFKA_SASL_PASSWORD or the
  // credential kafka_sasl_password (which win), so it need not be in the file.
  std::map<std::string, std::string> properties;
  // Only with brokers = "embedded": how many partitions each topic gets and
  // where to write the embedded broker's bootstrap address (for kcat, tests).
  int embedded_partitions = 6;
  std::string embedded_port_file;
  bool operator==(const KafkaConfig&) const = default;
};

struct DatabaseConfig {
  // Masked when printed if it carries a password.
  std::string url = "postgresql:///crm";
  // Connections the consume loop applies a batch on at once (its lanes; 1:
  // one transaction at a time). The follow-up executor, the HubSpot sync
  // executor, the Slack notifier (with a webhook) and the statistics thread
  // have one connection each besides. HubSpot's rate limit, not
  // connections, bounds the sync.
  int pool_size = 2;
  Millis connect_timeout{5000};
  // Credential database_password only. libpq's own PGPASSWORD / PGPASSFILE
  // and a password in `url` keep working; this one is for systemd's
  // LoadCredential=, which libpq cannot read by itself.
  Secret password;
  bool operator==(const DatabaseConfig&) const = default;
};

struct HubspotConfig {
  std::string base_url = "https://api.hubapi.com";
  std::string id_property = "crm_id";
  int requests_per_10s = 100;
  Secret token;  // CRM_WORKER_HUBSPOT_TOKEN / credential hubspot_token
  Millis timeout{10000};  // one API request, connection included
  // Inputs per batch request (HubSpot's cap is 100).
  int batch_size = 100;
  // The pipeline of pushed deals (HubSpot's internal id).
  std::string deal_pipeline = "default";
  // Our deal stage -> HubSpot's internal stage id. Stages not listed are
  // sent as they are (custom stages: their numeric ids); changes coming back
  // from HubSpot are mapped the other way.
  std::map<std::string, std::string> deal_stages{{"closed_won", "closedwon"},
                                                 {"closed_lost", "closedlost"}};
  bool operator==(const HubspotConfig&) const = default;
};

struct SendgridConfig {
  std::string base_url = "https://api.sendgrid.com";
  Secret api_key;  // CRM_WORKER_SENDGRID_API_KEY / credential sendgrid_api_key
  // The sender of follow-up emails; required to send them.
  std::string from_email;
  std::string from_name;
  // The dynamic template ("d-...") of follow-up emails whose own template is
  // not one.
  std::string followup_template;
  Millis timeout{10000};  // one mail send request, connection included
  bool operator==(const SendgridConfig&) const = default;
};

struct SlackConfig {
  Secret webhook_url;  // CRM_WORKER_SLACK_WEBHOOK_URL / credential slack_webhook_url
  Millis timeout{10000};  // one webhook request
  bool operator==(const SlackConfig&) const = default;
};

struct HttpConfig {
  std::string listen = "127.0.0.1:9464";
  bool operator==(const HttpConfig&) const = default;
};

struct LogConfig {
  std::string level = "info";   // debug, info, warn, error
  std::string format = "json";  // json, text
  bool operator==(const LogConfig&) const = default;
};

struct RetryConfig {
  int max_attempts = 10;
  Millis initial_backoff{1000};
  Millis max_backoff{600000};
  bool operator==(const RetryConfig&) const = default;
};

struct FollowupsConfig {
  // Delays after an email is sent (not itself a sequence step), each
  // scheduling one follow-up email; empty = no automatic follow-ups.
  std::vector<Millis> email_sequence{Millis{3LL * 24 * 3600 * 1000},
                                     Millis{7LL * 24 * 3600 * 1000}};
  // How long before a scheduled call its reminder is due.
  Millis call_reminder_before{15 * 60 * 1000};
  // A deal with no activity (its own or its prospect's) for this long gets
  // a Slack alert; 0 = no stale-deal alerts.
  Millis stale_deal_after{14LL * 24 * 3600 * 1000};
  // Follow-up emails go out only inside this local time window
  // ("HH:MM-HH:MM", start < end, "00:00-24:00" = any time) of the
  // prospect's time zone, and not on Saturdays and Sundays unless
  // send_on_weekends; a due email waits for the next allowed moment.
  std::string send_window = "08:00-20:00";
  bool send_on_weekends = false;
  // For prospects without a (known) time zone. An IANA name.
  std::string default_time_zone = "UTC";
  // How long a follow-up email that came due before its prospect was
  // discovered (no address, no crm.prospect.discovered applied yet) waits
  // for it before it is given up; 0 = not at all.
  Millis prospect_wait{3600 * 1000};
  bool operator==(const FollowupsConfig&) const = default;
};

// Behavioural lead scoring: lead_score = Σ weight × distinct count. Weights
// are never negative, so a score only grows and crossing the threshold
// happens once, whatever order the events arrive in.
struct LeadScoreWeights {
  int email_opened = 5;     // per email opened at least once (machine opens excluded)
  int email_clicked = 10;   // per email clicked at least once
  int email_replied = 30;   // per email replied to
  int sms_replied = 30;     // per SMS reply
  int call_scheduled = 20;  // per call scheduled
  int call_completed = 25;  // per call completed
  bool operator==(const LeadScoreWeights&) const = default;
};

struct LeadScoreConfig {
  // Reaching it queues one Slack notification per prospect; 0 = never.
  int threshold = 60;
  LeadScoreWeights weights;
  bool operator==(const LeadScoreConfig&) const = default;
};

// The executors that work through the database queues: the follow-up
// executor and the Slack notifier. Off = this instance only consumes Kafka
// (another instance, or a later start, fires what is due).
struct ExecutorsConfig {
  bool enabled = true;
  bool operator==(const ExecutorsConfig&) const = default;
};

// How the consume loop batches and bounds its input.
struct ConsumerConfig {
  int batch_max_events = 500;         // events applied in one transaction
  Millis batch_max_wait{0};           // linger, once nothing more is waiting, before a partial batch is applied
  Millis drain_timeout{20000};        // SIGTERM: finish in-flight work within this
  std::int64_t max_message_bytes = 1 << 20;  // larger → dead letter "too_large"
  int max_json_depth = 32;                    // deeper → dead letter "too_deep"
  std::int64_t max_string_bytes = 64 * 1024;  // longer string → "too_large"
  int max_batch_elements = 10000;  // SendGrid array elements per message
  // Workers that may die applying one message on its own before it becomes
  // a dead letter (crashed_worker) and its partition moves on.
  int crash_attempts = 3;
  bool operator==(const ConsumerConfig&) const = default;
};

struct Config {
  KafkaConfig kafka;
  DatabaseConfig database;
  HubspotConfig hubspot;
  SendgridConfig sendgrid;
  SlackConfig slack;
  HttpConfig http;
  LogConfig log;
  RetryConfig retry;
  FollowupsConfig followups;
  LeadScoreConfig lead_score;
  ConsumerConfig consumer;
  ExecutorsConfig executors;

  // Where the values came from, for messages ("(defaults)" if no file).
  std::string source_file;
  // Compares every field, source_file included (tests: render → load round trip).
  bool operator==(const Config&) const = default;
};

// One problem found while loading: "file:line: key: what is wrong".
struct ConfigError {
  std::string file;
  int line = 0;  // 0 when not from the file (environment, defaults)
  std::string key;
  std::string message;
  std::string to_string() const;
};

struct ConfigLoadResult {
  Config config;
  std::vector<ConfigError> errors;  // empty = valid
  bool ok() const { return errors.empty(); }
};

// The environment to read; injectable so tests do not touch the process env.
using Environment = std::map<std::string, std::string>;
Environment process_environment();

// Loads defaults, then `path` (if not empty; a missing file is an error),
// then `env`. Reports every problem, not just the first: unknown keys,
// wrong types, out-of-range values, bad durations, a secret in the file.
ConfigLoadResult load_config(const std::string& path, const Environment& env);

// load_config with the file's text given instead of read from `path`, which
// only names it in messages and in Config::source_file. For the fuzz target
// (fuzz/config_fuzz.cc), which must not write a file per input.
ConfigLoadResult load_config_text(std::string_view text, const std::string& path,
                                  const Environment& env);

// "HH:MM-HH:MM" → minutes since local midnight [start, end), start < end,
// end at most 24:00. nullopt if malformed.
std::optional<std::pair<int, int>> parse_send_window(std::string_view text);

// The effective configuration as TOML text, secrets masked. Used by
// check-config; safe to print and log.
std::string render_effective(const Config& config);

// A database URL / conninfo with any password replaced by "****".
std::string mask_database_url(const std::string& url);

}  // namespace crm
