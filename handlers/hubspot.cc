#include "handlers/hubspot.h"

#include <charconv>
#include <cstdint>

namespace crm::handlers {
namespace {

namespace json = boost::json;

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in epoch milliseconds:
// the instants a date column and parse_rfc3339 both hold.
constexpr std::int64_t kMinEpochMillis = -62135596800000;
constexpr std::int64_t kMaxEpochMillis = 253402300799999;

std::string string_of(const json::object& details, std::string_view field) {
  const json::value* v = details.if_contains(field);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

std::optional<std::string> hubspot_date(std::string_view value) {
  const std::string_view digits = value.starts_with('-') ? value.substr(1) : value;
  if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos) {
    std::int64_t ms = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
    if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
    if (ms < kMinEpochMillis || ms > kMaxEpochMillis) return std::nullopt;
    return format_rfc3339(Timestamp{ms * 1000}).substr(0, 10);
  }
  if (value.size() == 10) {
    // A date alone: validated as midnight UTC (rejects 2026-02-30).
    if (!parse_rfc3339(std::string(value) + "T00:00:00Z")) return std::nullopt;
    return std::string(value);
  }
  std::optional<Timestamp> t = parse_rfc3339(value);
  if (!t) return std::nullopt;
  return format_rfc3339(*t).substr(0, 10);
}

Status check_hubspot_change(const Event& event, Fact& fact) {
  const std::string object_type = string_of(fact.details, "object_type");
  fact.entity_id = object_type + ":" + fact.entity_id.value_or("");
  fact.prospect_id.reset();

  if (object_type != "deal") return Status::ok();
  const std::string property = string_of(fact.details, "property");
  const json::value* value = fact.details.if_contains("value");
  if (value == nullptr || !value->is_string() || value->get_string().empty()) return Status::ok();

  if (property == "amount") {
    Status s = check_field({"value", FieldKind::kAmount}, *value, fact.details);
    if (!s) return Status::permanent(s.reason(), s.message() + " (deal property amount)");
  } else if (property == "closedate") {
    std::optional<std::string> date = hubspot_date(value->get_string());
    if (!date) {
      return Status::permanent("bad_value",
                               "data.value is not a date (YYYY-MM-DD, an RFC 3339 time or epoch "
                               "milliseconds) (deal property closedate)");
    }
    fact.details["value"] = *date;
  }
  return Status::ok();
}

}  // namespace crm::handlers
