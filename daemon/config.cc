#include "daemon/config.h"

#include <sys/stat.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string_view>
#include <tuple>
#include <utility>

extern char** environ;

namespace crm {
namespace {

constexpr std::string_view kDefaultsSource = "(defaults)";

// Where an effective value came from, so that a check made after file and
// environment are merged (log.level, http.listen, ...) can still point at
// the right line or variable.
struct Origin {
  std::string file;
  int line = 0;
};
using Origins = std::map<std::string, Origin>;

// --- TOML text helpers -------------------------------------------------------

bool is_bare_key(std::string_view key) {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-';
  });
}

// Appends `ch`, escaped as a TOML basic string spells it if it is a
// control character.
void append_escaped(std::string& out, char ch) {
  const auto c = static_cast<unsigned char>(ch);
  switch (c) {
    case '\b': out += "\\b"; break;
    case '\t': out += "\\t"; break;
    case '\n': out += "\\n"; break;
    case '\f': out += "\\f"; break;
    case '\r': out += "\\r"; break;
    default:
      if (c < 0x20 || c == 0x7f) {
        char buffer[8];
        std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
        out += buffer;
      } else {
        out += ch;
      }
  }
}

// A TOML basic string. Control characters are escaped so that the output of
// render_effective stays one value per line and parses back.
std::string quote(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    append_escaped(out, ch);
  }
  out += '"';
  return out;
}

// toml++'s messages quote the input they stopped at, newline and terminal
// escapes included; an error must stay one line of check-config's output.
std::string one_line(std::string_view text) {
  std::string out;
  for (const char ch : text) append_escaped(out, ch);
  return out;
}

std::string key_segment(std::string_view name) {
  return is_bare_key(name) ? std::string(name) : quote(name);
}

std::string join_key(const std::string& prefix, std::string_view name) {
  return prefix.empty() ? key_segment(name) : prefix + "." + key_segment(name);
}

const char* type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    case toml::node_type::array: return "array";
    case toml::node_type::table: return "table";
    default: return "nothing";
  }
}

int line_of(const toml::source_region& region) { return static_cast<int>(region.begin.line); }

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Edit distance, for "did you mean" on unknown keys: a typo in a config key
// otherwise silently leaves the default in place.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Kafka properties whose values must never be printed. Deliberately broad:
// masking "ssl.key.location" costs nothing, printing "ssl.key.pem" leaks a key.
bool is_secret_property(std::string_view name) {
  const std::string lower = to_lower(name);
  for (const std::string_view marker :
       {"password", "secret", "sasl.jaas", "token", "key", "oauthbearer.config"}) {
    if (lower.find(marker) != std::string::npos) return true;
  }
  return false;
}

// Properties crm-worker sets itself. Overriding them would break delivery
// guarantees (offsets are stored only after PostgreSQL commits) or
// contradict a typed key.
std::optional<std::string_view> reserved_property(std::string_view name) {
  static const std::map<std::string_view, std::string_view> kReserved = {
      {"bootstrap.servers", "set kafka.brokers instead"},
      {"metadata.broker.list", "set kafka.brokers instead"},
      {"group.id", "set kafka.group_id instead"},
      {"enable.auto.commit", "crm-worker commits offsets itself, only after PostgreSQL commits"},
      {"enable.auto.offset.store",
       "crm-worker stores offsets itself, only after PostgreSQL commits"},
  };
  const auto it = kReserved.find(name);
  if (it == kReserved.end()) return std::nullopt;
  return it->second;
}

// --- secrets -------------------------------------------------------------------

// One secret and the two places it may come from. `env_var` may be empty
// (the database password has no variable of ours: libpq reads PGPASSWORD).
struct SecretSource {
  std::string_view key;
  std::string_view env_var;
  std::string_view credential;
};

constexpr SecretSource kHubspotToken{"hubspot.token", "CRM_WORKER_HUBSPOT_TOKEN", "hubspot_token"};
constexpr SecretSource kSendgridApiKey{"sendgrid.api_key", "CRM_WORKER_SENDGRID_API_KEY",
                                       "sendgrid_api_key"};
constexpr SecretSource kSlackWebhookUrl{"slack.webhook_url", "CRM_WORKER_SLACK_WEBHOOK_URL",
                                        "slack_webhook_url"};
constexpr SecretSource kDatabasePassword{"database.password", "", "database_password"};
// Goes into kafka.properties["sasl.password"], so that a SASL password, like
// every other secret, need not be written into the TOML file.
constexpr SecretSource kKafkaSaslPassword{"kafka.properties.\"sasl.password\"",
                                          "CRM_WORKER_KAFKA_SASL_PASSWORD",
                                          "kafka_sasl_password"};

std::string where_secrets_come_from(const SecretSource& source) {
  std::string out;
  if (!source.env_var.empty()) out += "set " + std::string(source.env_var) + " or ";
  out += "use the systemd credential " + std::string(source.credential) +
         " (LoadCredential=" + std::string(source.credential) + ":...)";
  return out;
}

// Reads a whole file; on failure returns nullopt and the reason.
std::optional<std::string> read_whole_file(const std::string& path, std::string& reason) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    reason = "is a directory";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    reason = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    reason = "read error";
    return std::nullopt;
  }
  return text.str();
}

// The value of a secret, from the environment first, then from the
// credentials directory; nullopt if neither has it. An empty variable or
// file counts as unset, as systemd writes `Environment=X=` to clear one.
std::optional<std::string> load_secret(const SecretSource& source, const Environment& env,
                                       Origins& origins, std::vector<ConfigError>& errors) {
  if (!source.env_var.empty()) {
    const auto it = env.find(std::string(source.env_var));
    if (it != env.end() && !it->second.empty()) {
      origins[std::string(source.key)] = {std::string(source.env_var), 0};
      return it->second;
    }
  }
  const auto dir = env.find("CREDENTIALS_DIRECTORY");
  if (dir == env.end() || dir->second.empty()) return std::nullopt;
  const std::string path = (std::filesystem::path(dir->second) / source.credential).string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::string reason;
  std::optional<std::string> value = read_whole_file(path, reason);
  if (!value) {
    errors.push_back({path, 0, std::string(source.key), "cannot read credential: " + reason});
    return std::nullopt;
  }
  // Files written with `echo` end in a newline that is not part of the secret.
  if (!value->empty() && value->back() == '\n') {
    value->pop_back();
    if (!value->empty() && value->back() == '\r') value->pop_back();
  }
  if (value->empty()) return std::nullopt;
  origins[std::string(source.key)] = {path, 0};
  return value;
}

// --- the TOML file -----------------------------------------------------------

// Walks the parsed file against the known layout and copies every valid value
// into the Config. Types and numeric ranges are checked here, where the line
// is known; checks that also apply to environment values live in validate().
class FileReader {
 public:
  FileReader(std::string file, Config& config, Origins& origins, std::vector<ConfigError>& errors)
      : file_(std::move(file)), config_(config), origins_(origins), errors_(errors) {}

  void read(const toml::table& root) {
    Config& c = config_;
    const std::vector<Field> kafka_topics = {
        {"outreach", string_field(c.kafka.topics.outreach)},
        {"sync", string_field(c.kafka.topics.sync)},
        {"followups", string_field(c.kafka.topics.followups)},
        {"sendgrid", string_field(c.kafka.topics.sendgrid)},
        {"dead_letter", string_field(c.kafka.topics.dead_letter)},
    };
    const std::vector<Field> kafka = {
        {"brokers", string_field(c.kafka.brokers)},
        {"group_id", string_field(c.kafka.group_id)},
        {"topics", table_field(kafka_topics)},
        {"properties", properties_field(c.kafka.properties)},
        {"embedded_partitions", int_field(c.kafka.embedded_partitions, 1, 256)},
        {"embedded_port_file", string_field(c.kafka.embedded_port_file)},
    };
    const std::vector<Field> database = {
        {"url", string_field(c.database.url)},
        {"pool_size", int_field(c.database.pool_size, 1, 64)},
        {"connect_timeout", duration_field(c.database.connect_timeout, Millis{1000}, hours(1))},
        {"password", secret_in_file(kDatabasePassword)},
    };
    const std::vector<Field> hubspot = {
        {"base_url", string_field(c.hubspot.base_url)},
        {"id_property", string_field(c.hubspot.id_property)},
        {"requests_per_10s", int_field(c.hubspot.requests_per_10s, 1, 10000)},
        {"token", secret_in_file(kHubspotToken)},
        {"timeout", duration_field(c.hubspot.timeout, Millis{100}, Millis{300000})},
        {"batch_size", int_field(c.hubspot.batch_size, 1, 100)},
        {"deal_pipeline", string_field(c.hubspot.deal_pipeline)},
        {"deal_stages", string_map_field(c.hubspot.deal_stages)},
    };
    const std::vector<Field> sendgrid = {
        {"base_url", string_field(c.sendgrid.base_url)},
        {"api_key", secret_in_file(kSendgridApiKey)},
        {"from_email", string_field(c.sendgrid.from_email)},
        {"from_name", string_field(c.sendgrid.from_name)},
        {"followup_template", string_field(c.sendgrid.followup_template)},
        {"timeout", duration_field(c.sendgrid.timeout, Millis{100}, Millis{300000})},
    };
    const std::vector<Field> slack = {
        {"webhook_url", secret_in_file(kSlackWebhookUrl)},
        {"timeout", duration_field(c.slack.timeout, Millis{100}, Millis{300000})},
    };
    const std::vector<Field> http = {
        {"listen", string_field(c.http.listen)},
    };
    const std::vector<Field> log = {
        {"level", string_field(c.log.level)},
        {"format", string_field(c.log.format)},
    };
    const std::vector<Field> retry = {
        {"max_attempts", int_field(c.retry.max_attempts, 1, 1000)},
        {"initial_backoff", duration_field(c.retry.initial_backoff, Millis{1}, hours(24))},
        {"max_backoff", duration_field(c.retry.max_backoff, Millis{1}, hours(7 * 24))},
    };
    const std::vector<Field> followups = {
        {"email_sequence", duration_list_field(c.followups.email_sequence, Millis{1},
                                               hours(365 * 24), kMaxEmailSequence)},
        {"call_reminder_before",
         duration_field(c.followups.call_reminder_before, Millis{0}, hours(7 * 24))},
        {"stale_deal_after", duration_field(c.followups.stale_deal_after, Millis{0}, hours(365 * 24))},
        {"send_window", string_field(c.followups.send_window)},
        {"send_on_weekends", bool_field(c.followups.send_on_weekends)},
        {"default_time_zone", string_field(c.followups.default_time_zone)},
        {"prospect_wait", duration_field(c.followups.prospect_wait, Millis{0}, hours(7 * 24))},
    };
    // Weights are never negative: a score that only grows crosses the
    // threshold once, whatever order the events arrive in.
    const std::vector<Field> lead_score_weights = {
        {"email_opened", int_field(c.lead_score.weights.email_opened, 0, 1000)},
        {"email_clicked", int_field(c.lead_score.weights.email_clicked, 0, 1000)},
        {"email_replied", int_field(c.lead_score.weights.email_replied, 0, 1000)},
        {"sms_replied", int_field(c.lead_score.weights.sms_replied, 0, 1000)},
        {"call_scheduled", int_field(c.lead_score.weights.call_scheduled, 0, 1000)},
        {"call_completed", int_field(c.lead_score.weights.call_completed, 0, 1000)},
    };
    const std::vector<Field> lead_score = {
        {"threshold", int_field(c.lead_score.threshold, 0, 1000000)},
        {"weights", table_field(lead_score_weights)},
    };
    const std::vector<Field> consumer = {
        {"batch_max_events", int_field(c.consumer.batch_max_events, 1, 10000)},
        {"batch_max_wait", duration_field(c.consumer.batch_max_wait, Millis{0}, Millis{60000})},
        {"drain_timeout", duration_field(c.consumer.drain_timeout, Millis{1}, hours(1))},
        {"max_message_bytes", int64_field(c.consumer.max_message_bytes, 1024, 1LL << 30)},
        {"max_json_depth", int_field(c.consumer.max_json_depth, 2, 512)},
        {"max_string_bytes", int64_field(c.consumer.max_string_bytes, 1, 1LL << 30)},
        {"max_batch_elements", int_field(c.consumer.max_batch_elements, 1, 1000000)},
        {"crash_attempts", int_field(c.consumer.crash_attempts, 1, 1000)},
    };
    const std::vector<Field> executors = {
        {"enabled", bool_field(c.executors.enabled)},
    };
    const std::vector<Field> sections = {
        {"kafka", table_field(kafka)},       {"database", table_field(database)},
        {"hubspot", table_field(hubspot)},   {"sendgrid", table_field(sendgrid)},
        {"slack", table_field(slack)},       {"http", table_field(http)},
        {"log", table_field(log)},           {"retry", table_field(retry)},
        {"followups", table_field(followups)}, {"lead_score", table_field(lead_score)},
        {"consumer", table_field(consumer)}, {"executors", table_field(executors)},
    };
    walk(root, "", sections);
  }

 private:
  static constexpr std::size_t kMaxEmailSequence = 20;

  // Reads one value found at `key` (full dotted name, for messages).
  using Reader = std::function<void(const toml::node& node, const std::string& key)>;
  struct Field {
    std::string_view name;
    Reader read;
  };

  static Millis hours(std::int64_t count) { return Millis{count * 3600 * 1000}; }

  void error(const toml::source_region& where, const std::string& key, std::string message) {
    errors_.push_back({file_, line_of(where), key, std::move(message)});
  }

  void type_error(const toml::node& node, const std::string& key, std::string_view expected) {
    error(node.source(), key,
          "expected " + std::string(expected) + ", got " + type_name(node));
  }

  void record(const std::string& key, const toml::node& node) {
    origins_[key] = {file_, line_of(node.source())};
  }

  void walk(const toml::table& table, const std::string& prefix, const std::vector<Field>& fields) {
    for (const auto& [name, node] : table) {
      const std::string key = join_key(prefix, name.str());
      // Not `name` itself in the lambda: clang before 16 cannot capture a
      // structured binding, and the fuzz build uses clang 14.
      const std::string_view wanted = name.str();
      const auto field = std::find_if(fields.begin(), fields.end(),
                                      [&](const Field& f) { return f.name == wanted; });
      if (field != fields.end()) {
        field->read(node, key);
        continue;
      }
      std::string message = "unknown key";
      const std::string lower = to_lower(name.str());
      for (const Field& known : fields) {
        if (edit_distance(lower, known.name) <= 2) {
          message += "; did you mean \"" + std::string(known.name) + "\"?";
          break;
        }
      }
      error(name.source(), key, std::move(message));
    }
  }

  Reader table_field(std::vector<Field> fields) {
    return [this, fields = std::move(fields)](const toml::node& node, const std::string& key) {
      if (const toml::table* table = node.as_table()) {
        walk(*table, key, fields);
      } else {
        type_error(node, key, "a table");
      }
    };
  }

  Reader string_field(std::string& out) {
    return [this, &out](const toml::node& node, const std::string& key) {
      if (const auto* value = node.as_string()) {
        out = value->get();
        record(key, node);
      } else {
        type_error(node, key, "a string");
      }
    };
  }

  Reader bool_field(bool& out) {
    return [this, &out](const toml::node& node, const std::string& key) {
      if (const auto* value = node.as_boolean()) {
        out = value->get();
        record(key, node);
      } else {
        type_error(node, key, "true or false");
      }
    };
  }

  template <typename Int>
  Reader integer_field(Int& out, std::int64_t min, std::int64_t max) {
    return [this, &out, min, max](const toml::node& node, const std::string& key) {
      const auto* value = node.as_integer();
      if (!value) {
        type_error(node, key, "an integer");
        return;
      }
      const std::int64_t v = value->get();
      if (v < min || v > max) {
        error(node.source(), key,
              "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                  ", got " + std::to_string(v));
        return;
      }
      out = static_cast<Int>(v);
      record(key, node);
    };
  }
  Reader int_field(int& out, int min, int max) { return integer_field(out, min, max); }
  Reader int64_field(std::int64_t& out, std::int64_t min, std::int64_t max) {
    return integer_field(out, min, max);
  }

  // Parses one duration node; reports and returns nullopt if it is not one.
  std::optional<Millis> duration_value(const toml::node& node, const std::string& key, Millis min,
                                       Millis max) {
    const auto* text = node.as_string();
    if (!text) {
      type_error(node, key, "a duration string like \"5s\"");
      return std::nullopt;
    }
    const std::optional<Millis> d = parse_duration(text->get());
    if (!d) {
      error(node.source(), key,
            "invalid duration " + quote(text->get()) +
                ": expected a whole number and a unit (ms, s, m, h, d), like \"5s\"");
      return std::nullopt;
    }
    if (*d < min || *d > max) {
      error(node.source(), key,
            "must be between " + format_duration(min) + " and " + format_duration(max) +
                ", got " + quote(text->get()));
      return std::nullopt;
    }
    return d;
  }

  Reader duration_field(Millis& out, Millis min, Millis max) {
    return [this, &out, min, max](const toml::node& node, const std::string& key) {
      if (const auto d = duration_value(node, key, min, max)) {
        out = *d;
        record(key, node);
      }
    };
  }

  Reader duration_list_field(std::vector<Millis>& out, Millis min, Millis max,
                             std::size_t max_size) {
    return [this, &out, min, max, max_size](const toml::node& node, const std::string& key) {
      const toml::array* array = node.as_array();
      if (!array) {
        type_error(node, key, "an array of duration strings like [\"3d\", \"7d\"]");
        return;
      }
      if (array->size() > max_size) {
        error(node.source(), key,
              "at most " + std::to_string(max_size) + " elements, got " +
                  std::to_string(array->size()));
        return;
      }
      std::vector<Millis> values;
      bool valid = true;
      for (std::size_t i = 0; i < array->size(); ++i) {
        const auto d = duration_value((*array)[i], key + "[" + std::to_string(i) + "]", min, max);
        if (d) values.push_back(*d);
        valid = valid && d.has_value();
      }
      if (!valid) return;
      out = std::move(values);
      record(key, node);
    };
  }

  // A table of non-empty strings, replacing the default map as a whole.
  Reader string_map_field(std::map<std::string, std::string>& out) {
    return [this, &out](const toml::node& node, const std::string& key) {
      const toml::table* table = node.as_table();
      if (!table) {
        type_error(node, key, "a table");
        return;
      }
      std::map<std::string, std::string> values;
      bool ok = true;
      for (const auto& [name, value] : *table) {
        const std::string entry_key = join_key(key, name.str());
        const auto* s = value.as_string();
        if (!s) {
          type_error(value, entry_key, "a string");
          ok = false;
        } else if (s->get().empty()) {
          error(value.source(), entry_key, "must not be empty");
          ok = false;
        } else {
          values[std::string(name.str())] = s->get();
        }
      }
      if (!ok) return;
      out = std::move(values);
      record(key, node);
    };
  }

  Reader properties_field(std::map<std::string, std::string>& out) {
    return [this, &out](const toml::node& node, const std::string& key) {
      const toml::table* table = node.as_table();
      if (!table) {
        type_error(node, key, "a table");
        return;
      }
      for (const auto& [name, value] : *table) {
        const std::string property_key = join_key(key, name.str());
        if (const auto why = reserved_property(name.str())) {
          error(name.source(), property_key, "may not be set here: " + std::string(*why));
          continue;
        }
        // Values are never quoted in these messages: the property may be
        // a password.
        if (const auto* s = value.as_string()) {
          out[std::string(name.str())] = s->get();
        } else if (const auto* i = value.as_integer()) {
          out[std::string(name.str())] = std::to_string(i->get());
        } else if (const auto* b = value.as_boolean()) {
          out[std::string(name.str())] = b->get() ? "true" : "false";
        } else if (value.is_table()) {
          error(name.source(), property_key,
                "a nested table; librdkafka names contain dots and must be quoted, like " +
                    quote(dotted_example(name.str(), *value.as_table())) + " = ...");
          continue;
        } else {
          type_error(value, property_key, "a string, integer or boolean");
          continue;
        }
        record(property_key, value);
      }
    };
  }

  // The dotted name a nested table was probably meant to be:
  // ssl.key.pem = "..." parses as ssl → key → pem.
  static std::string dotted_example(std::string_view head, const toml::table& table) {
    std::string name(head);
    const toml::table* current = &table;
    while (current && !current->empty()) {
      // The iterator owns the pair it yields, so it must outlive the use.
      const auto first = current->begin();
      name += "." + std::string(first->first.str());
      current = first->second.as_table();
    }
    return name;
  }

  Reader secret_in_file(const SecretSource& source) {
    return [this, &source](const toml::node& node, const std::string& key) {
      error(node.source(), key,
            "secrets are not read from the configuration file; " +
                where_secrets_come_from(source));
    };
  }

  std::string file_;
  Config& config_;
  Origins& origins_;
  std::vector<ConfigError>& errors_;
};

// --- the environment -----------------------------------------------------------

struct EnvOverride {
  std::string_view env_var;
  std::string_view key;
  std::string& (*field)(Config&);
};

const EnvOverride kEnvOverrides[] = {
    {"CRM_WORKER_KAFKA_BROKERS", "kafka.brokers",
     [](Config& c) -> std::string& { return c.kafka.brokers; }},
    {"CRM_WORKER_KAFKA_GROUP_ID", "kafka.group_id",
     [](Config& c) -> std::string& { return c.kafka.group_id; }},
    {"CRM_WORKER_DATABASE_URL", "database.url",
     [](Config& c) -> std::string& { return c.database.url; }},
    {"CRM_WORKER_HTTP_LISTEN", "http.listen",
     [](Config& c) -> std::string& { return c.http.listen; }},
    {"CRM_WORKER_LOG_LEVEL", "log.level",
     [](Config& c) -> std::string& { return c.log.level; }},
    {"CRM_WORKER_LOG_FORMAT", "log.format",
     [](Config& c) -> std::string& { return c.log.format; }},
};

void apply_environment(const Environment& env, Config& config, Origins& origins,
                       std::vector<ConfigError>& errors) {
  for (const EnvOverride& o : kEnvOverrides) {
    const auto it = env.find(std::string(o.env_var));
    // Empty counts as unset, as for secrets: `Environment=X=` clears X.
    if (it == env.end() || it->second.empty()) continue;
    o.field(config) = it->second;
    origins[std::string(o.key)] = {std::string(o.env_var), 0};
  }

  if (auto v = load_secret(kHubspotToken, env, origins, errors)) config.hubspot.token = Secret(*v);
  if (auto v = load_secret(kSendgridApiKey, env, origins, errors)) {
    config.sendgrid.api_key = Secret(*v);
  }
  if (auto v = load_secret(kSlackWebhookUrl, env, origins, errors)) {
    config.slack.webhook_url = Secret(*v);
  }
  if (auto v = load_secret(kDatabasePassword, env, origins, errors)) {
    config.database.password = Secret(*v);
  }
  if (auto v = load_secret(kKafkaSaslPassword, env, origins, errors)) {
    config.kafka.properties["sasl.password"] = *v;
  }
}

// --- checks on the merged values -------------------------------------------------

// "host:port", "[v6]:port"; nullopt if fine, else what is wrong.
std::optional<std::string> check_listen(std::string_view listen) {
  std::string_view host;
  std::string_view port;
  if (!listen.empty() && listen.front() == '[') {
    const std::size_t close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() ||
        listen[close + 1] != ':') {
      return "expected [IPv6]:port, like \"[::1]:9464\"";
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const std::size_t colon = listen.rfind(':');
    if (colon == std::string_view::npos) return "expected host:port, like \"127.0.0.1:9464\"";
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return "an IPv6 address needs brackets, like \"[::1]:9464\"";
    }
  }
  if (host.empty()) return "the host is empty; use \"0.0.0.0:PORT\" to listen on all addresses";
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return "the port must be a number between 0 and 65535";
  }
  if (std::stoi(std::string(port)) > 65535) return "the port must be between 0 and 65535";
  return std::nullopt;
}

// Kafka's own rule for topic names (kafka/common/internals/Topic.java).
bool is_valid_topic(std::string_view topic) {
  if (topic.empty() || topic.size() > 249 || topic == "." || topic == "..") return false;
  return std::all_of(topic.begin(), topic.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

bool is_http_url(std::string_view url) {
  for (const std::string_view scheme : {"https://", "http://"}) {
    if (url.substr(0, scheme.size()) == scheme && url.size() > scheme.size()) return true;
  }
  return false;
}

// An IANA zone name the system's tz database has (PostgreSQL reads the
// same files on Debian). UTC is always known.
bool is_known_time_zone(const std::string& zone) {
  if (zone == "UTC") return true;
  if (zone.empty() || zone.size() > 64 || zone.front() == '/' ||
      zone.find("..") != std::string::npos) {
    return false;
  }
  for (char ch : zone) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '/' && ch != '_' && ch != '-' &&
        ch != '+') {
      return false;
    }
  }
  struct stat st {};
  return ::stat(("/usr/share/zoneinfo/" + zone).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

class Validator {
 public:
  Validator(const Config& config, const Origins& origins, std::vector<ConfigError>& errors)
      : config_(config), origins_(origins), errors_(errors) {}

  void run() {
    const Config& c = config_;
    if (c.kafka.brokers.empty()) fail("kafka.brokers", "must not be empty");
    if (c.kafka.group_id.empty()) fail("kafka.group_id", "must not be empty");

    const std::pair<std::string_view, const std::string*> topics[] = {
        {"kafka.topics.outreach", &c.kafka.topics.outreach},
        {"kafka.topics.sync", &c.kafka.topics.sync},
        {"kafka.topics.followups", &c.kafka.topics.followups},
        {"kafka.topics.sendgrid", &c.kafka.topics.sendgrid},
        {"kafka.topics.dead_letter", &c.kafka.topics.dead_letter},
    };
    for (std::size_t i = 0; i < std::size(topics); ++i) {
      const auto& [key, topic] = topics[i];
      if (!is_valid_topic(*topic)) {
        fail(key, "invalid topic name " + quote(*topic) +
                      ": 1 to 249 characters of letters, digits, '.', '_' and '-'");
        continue;
      }
      // One topic with two meanings would route events to the wrong handler
      // or feed dead letters back into the consumer.
      for (std::size_t j = 0; j < i; ++j) {
        if (*topics[j].second == *topic) {
          fail(key, "same topic as " + std::string(topics[j].first) +
                        "; every topic must be different");
          break;
        }
      }
    }

    if (c.database.url.empty()) fail("database.url", "must not be empty");
    if (!is_http_url(c.hubspot.base_url)) {
      fail("hubspot.base_url", "must start with https:// (or http:// for a local fake), got " +
                                   quote(c.hubspot.base_url));
    }
    if (c.hubspot.id_property.empty()) fail("hubspot.id_property", "must not be empty");
    if (c.hubspot.deal_pipeline.empty()) fail("hubspot.deal_pipeline", "must not be empty");
    {
      // Changes from HubSpot are mapped back: each HubSpot stage may stand
      // for one of our stages only.
      std::map<std::string, std::string> back;
      for (const auto& [local, remote] : c.hubspot.deal_stages) {
        if (auto [it, fresh] = back.emplace(remote, local); !fresh) {
          fail("hubspot.deal_stages", "stages " + quote(it->second) + " and " + quote(local) +
                                          " both map to " + quote(remote));
        }
      }
    }
    if (!is_http_url(c.sendgrid.base_url)) {
      fail("sendgrid.base_url", "must start with https:// (or http:// for a local fake), got " +
                                    quote(c.sendgrid.base_url));
    }
    // The value itself is a secret, so the message does not repeat it.
    if (c.slack.webhook_url.is_set() && !is_http_url(c.slack.webhook_url.reveal())) {
      fail("slack.webhook_url", "must start with https://");
    }
    // They go into HTTP headers and URLs: a stray newline (a credential
    // file's last line) would make every request fail.
    const std::pair<std::string_view, const Secret*> http_secrets[] = {
        {"hubspot.token", &c.hubspot.token},
        {"sendgrid.api_key", &c.sendgrid.api_key},
        {"slack.webhook_url", &c.slack.webhook_url},
    };
    for (const auto& [key, secret] : http_secrets) {
      if (!secret->is_set()) continue;
      const std::string& v = secret->reveal();
      if (std::any_of(v.begin(), v.end(),
                      [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; })) {
        fail(key, "contains a control character (a newline?); the value is not shown");
      }
    }
    if (const auto problem = check_listen(c.http.listen)) {
      fail("http.listen", *problem + ", got " + quote(c.http.listen));
    }
    if (c.log.level != "debug" && c.log.level != "info" && c.log.level != "warn" &&
        c.log.level != "error") {
      fail("log.level", "must be one of debug, info, warn, error, got " + quote(c.log.level));
    }
    if (c.log.format != "json" && c.log.format != "text") {
      fail("log.format", "must be json or text, got " + quote(c.log.format));
    }
    if (c.retry.initial_backoff > c.retry.max_backoff) {
      fail("retry.initial_backoff", "must not exceed retry.max_backoff (" +
                                        format_duration(c.retry.max_backoff) + "), got " +
                                        format_duration(c.retry.initial_backoff));
    }
    const auto& seq = c.followups.email_sequence;
    for (std::size_t i = 1; i < seq.size(); ++i) {
      if (seq[i] <= seq[i - 1]) {
        fail("followups.email_sequence",
             "delays must grow (each counts from the original email), got " +
                 format_duration(seq[i - 1]) + " then " + format_duration(seq[i]));
        break;
      }
    }
    if (!parse_send_window(c.followups.send_window)) {
      fail("followups.send_window",
           "expected \"HH:MM-HH:MM\" with the start before the end (\"00:00-24:00\" = any time), "
           "got " + quote(c.followups.send_window));
    }
    if (!is_known_time_zone(c.followups.default_time_zone)) {
      fail("followups.default_time_zone",
           "not a time zone of the system's tz database (an IANA name like \"Europe/Berlin\"), got " +
               quote(c.followups.default_time_zone));
    }
    if (c.consumer.max_string_bytes > c.consumer.max_message_bytes) {
      fail("consumer.max_string_bytes",
           "must not exceed consumer.max_message_bytes (" +
               std::to_string(c.consumer.max_message_bytes) + "), got " +
               std::to_string(c.consumer.max_string_bytes));
    }
  }

 private:
  void fail(std::string_view key, std::string message) {
    const auto it = origins_.find(std::string(key));
    Origin origin = it != origins_.end() ? it->second : Origin{std::string(kDefaultsSource), 0};
    errors_.push_back({std::move(origin.file), origin.line, std::string(key), std::move(message)});
  }

  const Config& config_;
  const Origins& origins_;
  std::vector<ConfigError>& errors_;
};

// --- render helpers ----------------------------------------------------------------

void put(std::ostringstream& out, std::string_view key, const std::string& value) {
  out << key << " = " << value << "\n";
}

void put_secret(std::ostringstream& out, std::string_view name, const Secret& secret,
                const SecretSource& source) {
  // A comment, not a key: secrets in the file are an error, and the output
  // must load back.
  out << "# " << name << ": " << secret.masked() << "  (";
  if (!source.env_var.empty()) out << source.env_var << " or ";
  out << "credential " << source.credential << ")\n";
}

std::string durations(const std::vector<Millis>& list) {
  std::string out = "[";
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (i > 0) out += ", ";
    out += quote(format_duration(list[i]));
  }
  return out + "]";
}

// The keyword=value form of a libpq conninfo; values may be 'quoted' and
// use backslash escapes.
std::string mask_conninfo(const std::string& conninfo) {
  std::string out;
  std::size_t pos = 0;
  const std::size_t n = conninfo.size();
  while (pos < n) {
    // Copy whitespace and the keyword up to '=' (with optional spaces).
    const std::size_t key_start = pos;
    while (pos < n && std::isspace(static_cast<unsigned char>(conninfo[pos]))) ++pos;
    const std::size_t name_start = pos;
    while (pos < n && conninfo[pos] != '=' &&
           !std::isspace(static_cast<unsigned char>(conninfo[pos]))) {
      ++pos;
    }
    const std::string name = to_lower(conninfo.substr(name_start, pos - name_start));
    while (pos < n && std::isspace(static_cast<unsigned char>(conninfo[pos]))) ++pos;
    if (pos >= n || conninfo[pos] != '=') {
      if (name.empty()) {  // trailing whitespace
        out += conninfo.substr(key_start);
        return out;
      }
      // Not a conninfo libpq would accept; the rest might hold a password.
      out += conninfo.substr(key_start, name_start - key_start) + "****";
      return out;
    }
    ++pos;  // '='
    while (pos < n && std::isspace(static_cast<unsigned char>(conninfo[pos]))) ++pos;
    out += conninfo.substr(key_start, pos - key_start);

    const std::size_t value_start = pos;
    if (pos < n && conninfo[pos] == '\'') {
      ++pos;
      while (pos < n && conninfo[pos] != '\'') pos += (conninfo[pos] == '\\') ? 2 : 1;
      pos = std::min(pos + 1, n);
    } else {
      while (pos < n && !std::isspace(static_cast<unsigned char>(conninfo[pos]))) {
        pos += (conninfo[pos] == '\\') ? 2 : 1;
      }
      pos = std::min(pos, n);
    }
    if (name == "password" || name == "sslpassword") {
      out += "****";
    } else {
      out += conninfo.substr(value_start, pos - value_start);
    }
  }
  return out;
}

// postgresql://user:password@host/db?password=...&sslpassword=...
std::string mask_uri(const std::string& uri, std::size_t after_scheme) {
  std::string out = uri;
  // The user info ends at the '@' of the authority. A password with an
  // unescaped '/' or '?' would hide that '@' from a strict parse, so fall
  // back to the last '@' anywhere: masking too much is harmless.
  const std::size_t authority_end = out.find_first_of("/?#", after_scheme);
  std::size_t at = out.rfind('@', authority_end == std::string::npos ? std::string::npos
                                                                      : authority_end);
  if (at == std::string::npos || at < after_scheme) at = out.rfind('@');
  if (at != std::string::npos && at >= after_scheme) {
    const std::size_t colon = out.find(':', after_scheme);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "****");
  }
  const std::size_t query = out.find('?', after_scheme);
  if (query == std::string::npos) return out;
  std::size_t pos = query + 1;
  while (pos < out.size()) {
    std::size_t end = out.find('&', pos);
    if (end == std::string::npos) end = out.size();
    const std::size_t eq = out.find('=', pos);
    if (eq != std::string::npos && eq < end) {
      const std::string name = to_lower(out.substr(pos, eq - pos));
      if (name == "password" || name == "sslpassword") {
        out.replace(eq + 1, end - eq - 1, "****");
        end = eq + 1 + 4;
      }
    }
    pos = end + 1;
  }
  return out;
}

}  // namespace

const std::string& Secret::reveal() const {
  static const std::string kEmpty;
  return value_ ? *value_ : kEmpty;
}

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

Environment process_environment() {
  Environment env;
  for (char** entry = environ; entry && *entry; ++entry) {
    const std::string_view text(*entry);
    const std::size_t eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

namespace {

// Reads the file's text: nullopt and why not if it cannot.
using TextSource = std::function<std::optional<std::string>(std::string& reason)>;

// Defaults, then the file's text (none when `read` is empty), then `env`,
// then the checks on the merged values.
ConfigLoadResult load(const std::string& path, const TextSource& read, const Environment& env) {
  ConfigLoadResult result;
  Config& config = result.config;
  std::vector<ConfigError>& errors = result.errors;
  config.source_file = read ? path : std::string(kDefaultsSource);
  Origins origins;

  // Nothing may escape to the caller: check-config must print every problem
  // and exit 2, not die on an exception.
  try {
    if (read) {
      std::string reason;
      if (const auto text = read(reason)) {
        try {
          const toml::table root = toml::parse(*text, path);
          FileReader(path, config, origins, errors).read(root);
        } catch (const toml::parse_error& e) {
          errors.push_back({path, line_of(e.source()), "", one_line(e.description())});
        }
      } else {
        errors.push_back({path, 0, "", "cannot read the configuration file: " + reason});
      }
    }
    apply_environment(env, config, origins, errors);
    Validator(config, origins, errors).run();
  } catch (const std::exception& e) {
    errors.push_back({config.source_file, 0, "", std::string("internal error: ") + e.what()});
  }

  // File problems first in line order, so the list reads top to bottom;
  // the rest (environment, credentials) after, in the order found.
  std::stable_sort(errors.begin(), errors.end(), [&](const ConfigError& a, const ConfigError& b) {
    const auto rank = [&](const ConfigError& e) {
      return e.file == path ? std::make_tuple(0, e.line) : std::make_tuple(1, 0);
    };
    return rank(a) < rank(b);
  });
  return result;
}

}  // namespace

ConfigLoadResult load_config(const std::string& path, const Environment& env) {
  TextSource read;
  if (!path.empty()) {
    read = [&path](std::string& reason) { return read_whole_file(path, reason); };
  }
  return load(path, read, env);
}

ConfigLoadResult load_config_text(std::string_view text, const std::string& path,
                                  const Environment& env) {
  return load(path, [text](std::string&) { return std::optional<std::string>(text); }, env);
}

std::string render_effective(const Config& c) {
  std::ostringstream out;
  out << "# crm-worker effective configuration; secrets are masked.\n";
  out << "# source: " << quote(c.source_file) << "\n";

  out << "\n[kafka]\n";
  put(out, "brokers", quote(c.kafka.brokers));
  put(out, "group_id", quote(c.kafka.group_id));
  put(out, "embedded_partitions", std::to_string(c.kafka.embedded_partitions));
  put(out, "embedded_port_file", quote(c.kafka.embedded_port_file));

  out << "\n[kafka.topics]\n";
  put(out, "outreach", quote(c.kafka.topics.outreach));
  put(out, "sync", quote(c.kafka.topics.sync));
  put(out, "followups", quote(c.kafka.topics.followups));
  put(out, "sendgrid", quote(c.kafka.topics.sendgrid));
  put(out, "dead_letter", quote(c.kafka.topics.dead_letter));

  out << "\n[kafka.properties]\n";
  for (const auto& [name, value] : c.kafka.properties) {
    put(out, key_segment(name), quote(is_secret_property(name) ? "****" : value));
  }

  out << "\n[database]\n";
  put(out, "url", quote(mask_database_url(c.database.url)));
  put(out, "pool_size", std::to_string(c.database.pool_size));
  put(out, "connect_timeout", quote(format_duration(c.database.connect_timeout)));
  put_secret(out, "password", c.database.password, kDatabasePassword);

  out << "\n[hubspot]\n";
  put(out, "base_url", quote(c.hubspot.base_url));
  put(out, "id_property", quote(c.hubspot.id_property));
  put(out, "requests_per_10s", std::to_string(c.hubspot.requests_per_10s));
  put_secret(out, "token", c.hubspot.token, kHubspotToken);
  put(out, "timeout", quote(format_duration(c.hubspot.timeout)));
  put(out, "batch_size", std::to_string(c.hubspot.batch_size));
  put(out, "deal_pipeline", quote(c.hubspot.deal_pipeline));

  out << "\n[hubspot.deal_stages]\n";
  for (const auto& [local, remote] : c.hubspot.deal_stages) put(out, key_segment(local), quote(remote));

  out << "\n[sendgrid]\n";
  put(out, "base_url", quote(c.sendgrid.base_url));
  put_secret(out, "api_key", c.sendgrid.api_key, kSendgridApiKey);
  put(out, "from_email", quote(c.sendgrid.from_email));
  put(out, "from_name", quote(c.sendgrid.from_name));
  put(out, "followup_template", quote(c.sendgrid.followup_template));
  put(out, "timeout", quote(format_duration(c.sendgrid.timeout)));

  out << "\n[slack]\n";
  put_secret(out, "webhook_url", c.slack.webhook_url, kSlackWebhookUrl);
  put(out, "timeout", quote(format_duration(c.slack.timeout)));

  out << "\n[http]\n";
  put(out, "listen", quote(c.http.listen));

  out << "\n[log]\n";
  put(out, "level", quote(c.log.level));
  put(out, "format", quote(c.log.format));

  out << "\n[retry]\n";
  put(out, "max_attempts", std::to_string(c.retry.max_attempts));
  put(out, "initial_backoff", quote(format_duration(c.retry.initial_backoff)));
  put(out, "max_backoff", quote(format_duration(c.retry.max_backoff)));

  out << "\n[followups]\n";
  put(out, "email_sequence", durations(c.followups.email_sequence));
  put(out, "call_reminder_before", quote(format_duration(c.followups.call_reminder_before)));
  put(out, "stale_deal_after", quote(format_duration(c.followups.stale_deal_after)));
  put(out, "send_window", quote(c.followups.send_window));
  put(out, "send_on_weekends", c.followups.send_on_weekends ? "true" : "false");
  put(out, "default_time_zone", quote(c.followups.default_time_zone));
  put(out, "prospect_wait", quote(format_duration(c.followups.prospect_wait)));

  out << "\n[lead_score]\n";
  put(out, "threshold", std::to_string(c.lead_score.threshold));

  out << "\n[lead_score.weights]\n";
  const LeadScoreWeights& w = c.lead_score.weights;
  put(out, "email_opened", std::to_string(w.email_opened));
  put(out, "email_clicked", std::to_string(w.email_clicked));
  put(out, "email_replied", std::to_string(w.email_replied));
  put(out, "sms_replied", std::to_string(w.sms_replied));
  put(out, "call_scheduled", std::to_string(w.call_scheduled));
  put(out, "call_completed", std::to_string(w.call_completed));

  out << "\n[consumer]\n";
  put(out, "batch_max_events", std::to_string(c.consumer.batch_max_events));
  put(out, "batch_max_wait", quote(format_duration(c.consumer.batch_max_wait)));
  put(out, "drain_timeout", quote(format_duration(c.consumer.drain_timeout)));
  put(out, "max_message_bytes", std::to_string(c.consumer.max_message_bytes));
  put(out, "max_json_depth", std::to_string(c.consumer.max_json_depth));
  put(out, "max_string_bytes", std::to_string(c.consumer.max_string_bytes));
  put(out, "max_batch_elements", std::to_string(c.consumer.max_batch_elements));
  put(out, "crash_attempts", std::to_string(c.consumer.crash_attempts));

  out << "\n[executors]\n";
  put(out, "enabled", c.executors.enabled ? "true" : "false");
  return out.str();
}

std::optional<std::pair<int, int>> parse_send_window(std::string_view text) {
  // HH:MM-HH:MM, exactly.
  auto minutes = [](std::string_view t) -> std::optional<int> {
    if (t.size() != 5 || t[2] != ':') return std::nullopt;
    for (std::size_t i : {0, 1, 3, 4}) {
      if (!std::isdigit(static_cast<unsigned char>(t[i]))) return std::nullopt;
    }
    const int h = (t[0] - '0') * 10 + (t[1] - '0');
    const int m = (t[3] - '0') * 10 + (t[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && m != 0)) return std::nullopt;
    return h * 60 + m;
  };
  if (text.size() != 11 || text[5] != '-') return std::nullopt;
  const auto start = minutes(text.substr(0, 5));
  const auto end = minutes(text.substr(6, 5));
  if (!start || !end || *start >= *end) return std::nullopt;
  return std::make_pair(*start, *end);
}

std::string mask_database_url(const std::string& url) {
  for (const std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (url.size() >= scheme.size() && to_lower(url.substr(0, scheme.size())) == scheme) {
      return mask_uri(url, scheme.size());
    }
  }
  return mask_conninfo(url);
}

}  // namespace crm
