// Fuzz target: the config loader (daemon/config.h), from the TOML text to
// the validated Config, through load_config_text: no file is written and
// the environment is an empty map, so nothing of the process leaks in.
// Beyond not crashing (and nothing thrown: check-config must report, not
// die):
//   * every error names the file and is one line (README: "Errors are one
//     line on stderr naming the file, line and key"), in line order;
//   * a config that loads keeps the rules validate() promises;
//   * render_effective (check-config's output) loads back, without errors,
//     to the same Config, except what it masks.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <string_view>

#include "daemon/config.h"
#include "fuzz/support.h"

namespace crm::fuzz {
namespace {

constexpr const char* kFile = "fuzz.toml";
constexpr const char* kRendered = "rendered.toml";

// A check on merged values names the file only if the file set the key;
// otherwise "(defaults)", line 0. The file's errors come first.
void check_errors(const ConfigLoadResult& r, const std::string& file) {
  int previous_line = 0;
  bool past_file = false;
  for (const ConfigError& e : r.errors) {
    CRM_FUZZ_CHECK(e.file == file || (e.file == "(defaults)" && e.line == 0));
    CRM_FUZZ_CHECK(!e.message.empty());
    const std::string line = e.to_string();
    const bool one_line = line.find_first_of("\r\n") == std::string::npos;
    if (!one_line) std::fprintf(stderr, "error on more than one line: [%s]\n", line.c_str());
    CRM_FUZZ_CHECK(one_line);
    if (e.file != file) {
      past_file = true;
      continue;
    }
    CRM_FUZZ_CHECK(!past_file && e.line >= previous_line);
    previous_line = e.line;
  }
}

void check_valid(const Config& c) {
  const std::set<std::string> topics = {c.kafka.topics.outreach, c.kafka.topics.sync,
                                        c.kafka.topics.followups, c.kafka.topics.sendgrid,
                                        c.kafka.topics.dead_letter};
  CRM_FUZZ_CHECK(topics.size() == 5);
  CRM_FUZZ_CHECK(!c.kafka.brokers.empty() && !c.kafka.group_id.empty());
  CRM_FUZZ_CHECK(!c.database.url.empty());
  std::set<std::string> remote_stages;
  for (const auto& [local, remote] : c.hubspot.deal_stages) {
    CRM_FUZZ_CHECK(!remote.empty() && remote_stages.insert(remote).second);
  }
  CRM_FUZZ_CHECK(c.log.level == "debug" || c.log.level == "info" || c.log.level == "warn" ||
                 c.log.level == "error");
  CRM_FUZZ_CHECK(c.log.format == "json" || c.log.format == "text");
  CRM_FUZZ_CHECK(c.retry.initial_backoff <= c.retry.max_backoff);
  const auto& sequence = c.followups.email_sequence;
  for (std::size_t i = 1; i < sequence.size(); ++i) CRM_FUZZ_CHECK(sequence[i - 1] < sequence[i]);
  CRM_FUZZ_CHECK(parse_send_window(c.followups.send_window).has_value());
  CRM_FUZZ_CHECK(c.consumer.max_string_bytes <= c.consumer.max_message_bytes);
  // Secrets come only from the environment, which is empty here.
  CRM_FUZZ_CHECK(!c.hubspot.token.is_set() && !c.sendgrid.api_key.is_set() &&
                 !c.slack.webhook_url.is_set() && !c.database.password.is_set());
}

// What render_effective is allowed to change: it masks passwords in the
// database URL and the values of secret-looking Kafka properties.
Config masked(Config c, const Config& rendered_back) {
  c.source_file = kRendered;
  c.database.url = mask_database_url(c.database.url);
  for (auto& [name, value] : c.kafka.properties) {
    const auto it = rendered_back.kafka.properties.find(name);
    if (it != rendered_back.kafka.properties.end() && it->second == "****") value = "****";
  }
  return c;
}

void report(const std::string& rendered, const ConfigLoadResult& back) {
  std::fprintf(stderr, "rendered:\n%s\nloaded back with %zu error(s):\n", rendered.c_str(),
               back.errors.size());
  for (const ConfigError& e : back.errors) std::fprintf(stderr, "  %s\n", e.to_string().c_str());
  std::fprintf(stderr, "and renders as:\n%s\n", render_effective(back.config).c_str());
}

}  // namespace
}  // namespace crm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ConfigLoadResult r = load_config_text(text, fuzz::kFile, {});
  fuzz::check_errors(r, fuzz::kFile);
  if (!r.ok()) return 0;
  fuzz::check_valid(r.config);

  const std::string rendered = render_effective(r.config);
  const ConfigLoadResult back = load_config_text(rendered, fuzz::kRendered, {});
  const bool same = back.ok() && back.config == fuzz::masked(r.config, back.config);
  if (!same) fuzz::report(rendered, back);
  CRM_FUZZ_CHECK(same);
  return 0;
}
