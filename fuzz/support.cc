#include "fuzz/support.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include <boost/json.hpp>

#include "daemon/core/time.h"
#include "handlers/routing.h"

namespace crm::fuzz {
namespace {

namespace json = boost::json;

// One error line: the dead-letter message and the log line it becomes.
// Values are echoed at most 64 bytes, each byte at most 4 characters.
constexpr std::size_t kMaxMessageBytes = 512;

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: what RFC 3339 with
// a four-digit year, and so format_rfc3339, can spell.
constexpr std::int64_t kMinMicros = -62135596800LL * 1'000'000;
constexpr std::int64_t kMaxMicros = 253402300799LL * 1'000'000 + 999'999;

void check_error(const Status& error) {
  CRM_FUZZ_CHECK(!error.is_ok());
  CRM_FUZZ_CHECK(error.is_permanent());
  CRM_FUZZ_CHECK(is_documented_reason(error.reason()));
  CRM_FUZZ_CHECK(!error.message().empty());
  CRM_FUZZ_CHECK(error.message().size() <= kMaxMessageBytes);
  CRM_FUZZ_CHECK(is_printable_ascii(error.message()));
}

void check_time(Timestamp t) {
  CRM_FUZZ_CHECK(t.micros_since_epoch >= kMinMicros && t.micros_since_epoch <= kMaxMicros);
  const std::optional<Timestamp> again = parse_rfc3339(format_rfc3339(t));
  CRM_FUZZ_CHECK(again.has_value() && *again == t);
}

// A fact's contract fields are normalized (handlers/handler.h): a time is
// the canonical RFC 3339 spelling of itself, so the projections may compare
// them as text.
void check_fact(const handlers::Handler& handler, const Event& ev, const handlers::Fact& fact) {
  CRM_FUZZ_CHECK(fact.entity_type == handler.entity);
  if (fact.prospect_id) CRM_FUZZ_CHECK(!fact.prospect_id->empty());
  if (fact.provider_message_id) {
    CRM_FUZZ_CHECK(!fact.provider_message_id->empty());
    CRM_FUZZ_CHECK(fact.provider_message_id->find('.') == std::string::npos);
  }
  if (handler.entity == handlers::EntityType::kNone) {
    CRM_FUZZ_CHECK(!fact.entity_id.has_value());
  } else if (fact.entity_id) {
    CRM_FUZZ_CHECK(!fact.entity_id->empty());
  } else {
    // Only a SendGrid event may name its email by the message id alone.
    CRM_FUZZ_CHECK(handler.entity == handlers::EntityType::kEmail);
    CRM_FUZZ_CHECK(fact.provider_message_id.has_value());
    CRM_FUZZ_CHECK(ev.type != "crm.email.sent");
  }
  for (const handlers::FieldSpec& spec : handler.fields) {
    const json::value* v = fact.details.if_contains(spec.name);
    if (spec.required) CRM_FUZZ_CHECK(v != nullptr && !v->is_null());
    if (v == nullptr || spec.kind != handlers::FieldKind::kTime) continue;
    CRM_FUZZ_CHECK(v->is_string());
    const std::optional<Timestamp> t = parse_rfc3339(v->get_string());
    CRM_FUZZ_CHECK(t.has_value());
    check_time(*t);
    CRM_FUZZ_CHECK(format_rfc3339(*t) == v->get_string());
  }
  if (handler.entity == handlers::EntityType::kHubspot) {
    CRM_FUZZ_CHECK(fact.entity_id.has_value());
    const json::value* type = fact.details.if_contains("object_type");
    CRM_FUZZ_CHECK(type != nullptr && type->is_string());
    CRM_FUZZ_CHECK(fact.entity_id->starts_with(std::string(type->get_string()) + ":"));
    // A deal's close date is normalized to its UTC date (handlers/hubspot.h).
    const json::value* property = fact.details.if_contains("property");
    const json::value* value = fact.details.if_contains("value");
    if (type->get_string() == "deal" && property != nullptr && property->is_string() &&
        property->get_string() == "closedate" && value != nullptr && value->is_string() &&
        !value->get_string().empty()) {
      const std::string date(value->get_string());
      CRM_FUZZ_CHECK(date.size() == 10 && parse_rfc3339(date + "T00:00:00Z").has_value());
    }
  }
}

void check_handled(const Event& ev) {
  const handlers::Handler* handler = handlers::find_handler(ev.type);
  if (handler == nullptr) return;  // the dispatcher's unknown_type
  const Result<handlers::Fact> fact = handler->extract(ev);
  if (fact) {
    check_fact(*handler, ev, *fact);
  } else {
    check_error(fact.status());
  }
}

}  // namespace

void violated(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: invariant violated: %s\n", file, line, condition);
  std::abort();
}

bool same_json(const json::value& a, const json::value& b) {
  if (a.is_double() && b.is_double()) {
    const double x = a.get_double();
    const double y = b.get_double();
    return x == y || std::fabs(x - y) <= 4 * std::numeric_limits<double>::epsilon() *
                                             std::max(std::fabs(x), std::fabs(y));
  }
  if (a.kind() != b.kind()) return a == b;
  if (a.is_array()) {
    const json::array& x = a.get_array();
    const json::array& y = b.get_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!same_json(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    const json::object& x = a.get_object();
    const json::object& y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& [key, value] : x) {
      const json::value* other = y.if_contains(key);
      if (other == nullptr || !same_json(value, *other)) return false;
    }
    return true;
  }
  return a == b;
}

bool is_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) {
      length = 1;
      code = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2;
      code = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      code = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      code = lead & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    // The shortest form only, no surrogates, nothing beyond U+10FFFF.
    static constexpr std::uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kSmallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

bool is_storable_text(std::string_view s) {
  return s.find('\0') == std::string_view::npos && is_utf8(s);
}

bool is_printable_ascii(std::string_view s) {
  for (const char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool is_documented_reason(std::string_view reason) {
  static constexpr std::string_view kReasons[] = {
      // queue/decode.h
      "empty", "too_large", "too_deep", "not_json", "invalid_utf8", "nul_in_string",
      "duplicate_key", "not_object", "bad_specversion", "missing_field", "wrong_type", "bad_time",
      "bad_headers", "not_array", "too_many_elements", "unknown_type",
      // handlers/handler.h
      "bad_value"};
  for (const std::string_view known : kReasons) {
    if (reason == known) return true;
  }
  return false;
}

queue::DecodeLimits fuzz_limits() {
  queue::DecodeLimits limits;
  limits.max_message_bytes = 8 * 1024;
  limits.max_string_bytes = 1024;
  limits.max_batch_elements = 64;
  return limits;
}

void check_item(const queue::DecodedItem& item, const queue::DecodeLimits& limits) {
  if (!item.event) {
    check_error(item.error);
    return;
  }
  CRM_FUZZ_CHECK(item.error.is_ok());
  const Event& ev = *item.event;
  CRM_FUZZ_CHECK(ev.origin.id() == item.origin.id());
  for (const std::string* text : {&ev.id, &ev.source, &ev.type}) {
    CRM_FUZZ_CHECK(!text->empty());
    CRM_FUZZ_CHECK(is_storable_text(*text));
    CRM_FUZZ_CHECK(static_cast<std::int64_t>(text->size()) <= limits.max_string_bytes);
  }
  CRM_FUZZ_CHECK(is_storable_text(ev.key));
  CRM_FUZZ_CHECK(static_cast<std::int64_t>(ev.key.size()) <= limits.max_string_bytes);
  check_time(ev.time);

  // The data goes into a jsonb column and, with the event, into dead
  // letters that are replayed: it must parse again under the same rules
  // (no NUL, valid UTF-8, finite numbers). Only the size may grow, as a
  // SendGrid event's data holds its element and copies of its fields.
  queue::DecodeLimits replay = limits;
  replay.max_message_bytes = 4 * limits.max_message_bytes;
  const Result<json::value> data = queue::parse_json_limited(json::serialize(ev.data), replay);
  CRM_FUZZ_CHECK(data.is_ok());
  CRM_FUZZ_CHECK(data->is_object() && same_json(*data, ev.data));

  check_handled(ev);
}

}  // namespace crm::fuzz
