#pragma once
// HubSpot's CRM v3 batch API and v4 associations as the sync executor uses
// them (REFERENCE.md §3): the request bodies and the parsing of answers.
// Pure functions, so the wire format is unit-tested without a server and
// fuzzed; the executor (daemon/sync_executor.h) decides what to send.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/time.h"
#include "http/client.h"

namespace crm::hubspot {

// Our entity type ("company", "contact", "deal") -> HubSpot's object type
// ("companies", ...).
std::string object_type(const std::string& entity_type);

struct Input {
  std::string id;  // the value of the unique id property: our id
  std::map<std::string, std::string> properties;
};

// POST /crm/v3/objects/{type}/batch/upsert
std::string upsert_body(const std::vector<Input>& inputs, const std::string& id_property);
// POST /crm/v3/objects/{type}/batch/read, by the id property's values.
std::string read_body(const std::vector<std::string>& ids, const std::string& id_property,
                      const std::vector<std::string>& properties);
// POST /crm/v3/objects/{type}/batch/archive, by HubSpot ids.
std::string archive_body(const std::vector<std::string>& hubspot_ids);
// POST /crm/v4/associations/{from}/{to}/batch/associate/default: (from, to)
// HubSpot ids.
std::string associate_body(const std::vector<std::pair<std::string, std::string>>& pairs);

struct Object {
  std::string id;  // HubSpot's
  std::map<std::string, std::string> properties;  // null values are absent
};

// The `results` of a batch answer (upsert or read). nullopt when the body
// is not such an answer; results without a string id (or with a NUL in it)
// are skipped.
std::optional<std::vector<Object>> parse_results(std::string_view body);

// One line for logs and last_error from an error answer: category (or
// errorType), message and correlationId, at most ~500 bytes, cut between
// characters, control characters (NUL included) turned into spaces. Falls
// back to the status alone when the body is not HubSpot's error JSON.
std::string error_summary(const http::Response& response);

// X-HubSpot-RateLimit-*: what HubSpot says of the app's budget. Each is
// absent when missing or malformed (HubSpot leaves them out at times).
struct RateHeaders {
  std::optional<int> max;
  std::optional<int> remaining;
  std::optional<Millis> interval;
};
RateHeaders rate_headers(const http::Response& response);

// A 429's policyName: "DAILY" means the day's budget is gone.
bool daily_limit_hit(const http::Response& response);

}  // namespace crm::hubspot
