#include "queue/decode.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

// basic_parser's member definitions live in this header, not in the compiled
// library: it is needed to instantiate the parser over our own handler.
#include <boost/json/basic_parser_impl.hpp>

namespace crm::queue {
namespace {

namespace json = boost::json;

constexpr std::size_t kNpos = std::string_view::npos;

// Echoed values are capped so that a message line stays one short line
// whatever the payload holds.
constexpr std::size_t kMaxEchoBytes = 64;

// 9999-12-31T23:59:59Z: the last second RFC 3339 (and format_rfc3339) can
// spell. SendGrid sends seconds; anything outside [0, this] is not a time.
constexpr std::int64_t kMaxUnixSeconds = 253402300799;

Status fail(const char* reason, std::string message) {
  return Status::permanent(reason, std::move(message));
}

// A value quoted for an error message: at most kMaxEchoBytes of it, and
// every byte outside printable ASCII escaped, so that a hostile value can
// neither break the log line (newline) nor reorder it (U+202E).
std::string echo(std::string_view v) {
  std::string out = "\"";
  const std::size_t n = std::min(v.size(), kMaxEchoBytes);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  out += '"';
  if (v.size() > n) out += "...";
  return out;
}

std::string quoted(std::string_view name) { return "\"" + std::string(name) + "\""; }

std::string kind_name(const json::value& v) { return std::string(json::to_string(v.kind())); }

std::uint64_t max_string_bytes(const DecodeLimits& limits) {
  return limits.max_string_bytes > 0 ? static_cast<std::uint64_t>(limits.max_string_bytes) : 0;
}

// Offset of the first byte that is not well-formed UTF-8 (Unicode Table
// 3-7: no overlong forms, no encoded surrogates, nothing above U+10FFFF), or
// kNpos. Boost checks the same inside strings but reports it as a plain
// syntax error, so we check first to give it its own reason.
std::size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c == 0xE0) {
      len = 3;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      len = 3;
    } else if (c == 0xED) {
      len = 3;
      hi = 0x9F;
    } else if (c == 0xF0) {
      len = 4;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = 4;
    } else if (c == 0xF4) {
      len = 4;
      hi = 0x8F;
    } else {
      return i;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return kNpos;
}

int hex4(std::string_view s, std::size_t pos) {
  if (pos + 4 > s.size()) return -1;
  int v = 0;
  for (std::size_t i = pos; i < pos + 4; ++i) {
    const char c = s[i];
    int d = 0;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

// True if a string in `text` holds a \uD800-\uDFFF escape that is not half of
// a valid pair. Boost 1.81 rejects those, but a lone leading surrogate
// ("\ud800" then anything but "\u") comes out as a plain syntax error; this
// scan, run only on text Boost already refused, names it. It is not a full
// lexer and need not be: it only chooses between two reasons for a document
// that is rejected either way.
bool has_lone_surrogate_escape(std::string_view text) {
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!in_string) {
      in_string = c == '"';
      continue;
    }
    if (c == '"') {
      in_string = false;
      continue;
    }
    if (c != '\\') continue;
    if (i + 1 >= text.size()) return false;
    if (text[i + 1] != 'u') {
      ++i;  // skip the escaped character, which may be a quote
      continue;
    }
    const int u = hex4(text, i + 2);
    if (u < 0) return false;
    i += 5;  // now on the last hex digit
    if (u >= 0xDC00 && u <= 0xDFFF) return true;
    if (u >= 0xD800 && u <= 0xDBFF) {
      const bool paired = i + 6 < text.size() && text[i + 1] == '\\' && text[i + 2] == 'u' &&
                          hex4(text, i + 3) >= 0xDC00 && hex4(text, i + 3) <= 0xDFFF;
      if (!paired) return true;
      i += 6;
    }
  }
  return false;
}

// The Kafka key and ce_* header values end up in text columns next to JSON
// strings, so they get the same rules.
std::optional<Status> check_text(std::string_view v, const std::string& what,
                                 const DecodeLimits& limits) {
  if (v.size() > max_string_bytes(limits)) {
    return fail("too_large", what + " is " + std::to_string(v.size()) + " bytes, more than " +
                                 std::to_string(max_string_bytes(limits)));
  }
  if (std::size_t bad = find_invalid_utf8(v); bad != kNpos) {
    return fail("invalid_utf8", what + " is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  if (v.find('\0') != kNpos) return fail("nul_in_string", what + " contains a NUL character");
  return std::nullopt;
}

// A Boost.JSON basic_parser handler that builds the DOM exactly as
// boost::json::parser does (through a value_stack) and enforces our limits
// as the tokens arrive: string and key length, no NUL, finite numbers, no
// duplicate keys. Checking here rather than walking the finished DOM means
// no recursion of our own, an early stop on a huge string, and duplicate keys
// are still visible (the DOM keeps only the last one). One instance per
// parse_json_limited call, on the caller's thread.
class LimitedHandler {
 public:
  // Required by basic_parser. Our own, smaller limit is checked per call.
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  explicit LimitedHandler(const DecodeLimits& limits) : max_string_(max_string_bytes(limits)) {
    st_.reset();
  }

  const std::optional<Status>& violation() const { return violation_; }
  json::value release() { return st_.release(); }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }

  bool on_object_begin(json::error_code&) {
    object_starts_.push_back(keys_.size());
    return true;
  }
  bool on_object_end(std::size_t n, json::error_code& ec) {
    const std::size_t start = object_starts_.back();
    if (const std::string* dup = find_duplicate(start)) {
      return stop(ec, fail("duplicate_key", "key " + echo(*dup) + " appears twice in one object"));
    }
    keys_.resize(start);
    object_starts_.pop_back();
    st_.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t n, json::error_code&) {
    st_.push_array(n);
    return true;
  }

  bool on_key_part(json::string_view s, std::size_t total, json::error_code& ec) {
    if (!check(s, total, true, ec)) return false;
    key_.append(s.data(), s.size());
    st_.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t total, json::error_code& ec) {
    if (!check(s, total, true, ec)) return false;
    key_.append(s.data(), s.size());
    keys_.push_back(std::move(key_));
    key_.clear();
    st_.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t total, json::error_code& ec) {
    if (!check(s, total, false, ec)) return false;
    st_.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t total, json::error_code& ec) {
    if (!check(s, total, false, ec)) return false;
    st_.push_string(s);
    return true;
  }

  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    st_.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    st_.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view, json::error_code& ec) {
    // Boost turns "1e999" into infinity; serialize() would then write
    // "Infinity", which neither JSON nor PostgreSQL's jsonb accepts.
    if (!std::isfinite(d)) {
      return stop(ec, fail("not_json", "a number" + where() + " is out of the range of a double"));
    }
    st_.push_double(d);
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    st_.push_bool(b);
    return true;
  }
  bool on_null(json::error_code&) {
    st_.push_null();
    return true;
  }
  // Comments are off in parse_options; these are never called.
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  bool stop(json::error_code& ec, Status why) {
    violation_ = std::move(why);
    // Any error stops basic_parser; which one does not matter, the caller
    // looks at violation_ first.
    ec = json::error::exception;
    return false;
  }

  bool check(json::string_view s, std::size_t total, bool is_key, json::error_code& ec) {
    if (total > max_string_ || std::memchr(s.data(), '\0', s.size()) != nullptr) {
      // A key is named by its own first bytes, a string by its field.
      const std::string what =
          is_key ? "a key starting " + echo(key_ + std::string(s.substr(0, kMaxEchoBytes)))
                 : "a string" + where();
      if (total > max_string_) {
        return stop(ec, fail("too_large", what + " is longer than " +
                                              std::to_string(max_string_) + " bytes"));
      }
      return stop(ec, fail("nul_in_string", what + " contains \\u0000"));
    }
    return true;
  }

  // The innermost field being read: the last key of the innermost open
  // object, which is the value's own key or the key of the array holding it.
  std::string where() const { return keys_.empty() ? "" : " in field " + echo(keys_.back()); }

  const std::string* find_duplicate(std::size_t start) const {
    const std::size_t n = keys_.size() - start;
    if (n < 2) return nullptr;
    std::vector<const std::string*> sorted;
    sorted.reserve(n);
    for (std::size_t i = start; i < keys_.size(); ++i) sorted.push_back(&keys_[i]);
    std::sort(sorted.begin(), sorted.end(),
              [](const std::string* a, const std::string* b) { return *a < *b; });
    for (std::size_t i = 1; i < sorted.size(); ++i) {
      if (*sorted[i] == *sorted[i - 1]) return sorted[i];
    }
    return nullptr;
  }

  std::uint64_t max_string_;
  json::value_stack st_;
  std::optional<Status> violation_;
  std::string key_;                         // the key being read, across parts
  std::vector<std::string> keys_;           // keys of every open object, in order
  std::vector<std::size_t> object_starts_;  // where each open object's keys begin
};

Status status_for_parse_error(const json::error_code& ec, std::string_view text,
                              const DecodeLimits& limits) {
  if (ec == json::error::too_deep) {
    return fail("too_deep", "JSON nesting is deeper than " +
                                std::to_string(limits.max_json_depth) + " levels");
  }
  if (ec == json::error::illegal_leading_surrogate ||
      ec == json::error::illegal_trailing_surrogate || has_lone_surrogate_escape(text)) {
    return fail("invalid_utf8", "a \\u escape is a lone UTF-16 surrogate");
  }
  if (ec == json::error::string_too_large || ec == json::error::key_too_large ||
      ec == json::error::object_too_large || ec == json::error::array_too_large) {
    return fail("too_large", "JSON value too large (" + ec.message() + ")");
  }
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") {
    return fail("not_json", "the value starts with a UTF-8 byte order mark, which JSON forbids");
  }
  if (ec == json::error::incomplete) {
    return fail("not_json", "the JSON text ends early (truncated or empty)");
  }
  if (ec == json::error::extra_data) {
    return fail("not_json", "there is data after the end of the JSON document");
  }
  return fail("not_json", "not valid JSON (" + ec.message() + ")");
}

// Exceptions out of the decoder would take the consume loop down with them;
// turn them into a dead letter instead. Memory use is bounded by the input
// limits, so running out of it means this message is too big for us.
Status status_for_exception() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return fail("too_large", "out of memory while decoding the message");
  } catch (const std::exception& e) {
    return fail("not_json", "decoder error: " + echo(e.what()));
  } catch (...) {
    return fail("not_json", "decoder error");
  }
}

std::optional<Status> check_value_limits(const RawMessage& msg, const DecodeLimits& limits) {
  if (msg.value && static_cast<std::int64_t>(msg.value->size()) > limits.max_message_bytes) {
    return fail("too_large", "the message value is " + std::to_string(msg.value->size()) +
                                 " bytes, more than " + std::to_string(limits.max_message_bytes));
  }
  if (!msg.value) return fail("empty", "the message value is null");
  if (msg.value->empty()) return fail("empty", "the message value is empty");
  return std::nullopt;
}

// A required, non-empty string member of a JSON object.
Result<std::string> required_string(const json::object& obj, std::string_view name) {
  const json::value* v = obj.if_contains(name);
  if (v == nullptr) return fail("missing_field", "field " + quoted(name) + " is missing");
  if (!v->is_string()) {
    return fail("wrong_type", "field " + quoted(name) + " is " + kind_name(*v) + ", not a string");
  }
  if (v->get_string().empty()) return fail("missing_field", "field " + quoted(name) + " is empty");
  return std::string(v->get_string());
}

// An optional string member: absent, null or empty give an empty string; any
// other type is an error, because it means the producer is not who we think.
Result<std::string> optional_string(const json::object& obj, std::string_view name) {
  const json::value* v = obj.if_contains(name);
  if (v == nullptr || v->is_null()) return std::string();
  if (!v->is_string()) {
    return fail("wrong_type", "field " + quoted(name) + " is " + kind_name(*v) + ", not a string");
  }
  return std::string(v->get_string());
}

Result<Timestamp> parse_time(std::string_view text, const std::string& what) {
  if (std::optional<Timestamp> t = parse_rfc3339(text)) return *t;
  return fail("bad_time", what + " is not an RFC 3339 date-time: " + echo(text));
}

Result<Event> decode_structured(const RawMessage& msg, const DecodeLimits& limits) {
  Result<json::value> parsed = parse_json_limited(*msg.value, limits);
  if (!parsed) return parsed.status();
  if (!parsed->is_object()) {
    return fail("not_object", "the message is a JSON " + kind_name(*parsed) + ", not an object");
  }
  json::object& obj = parsed->as_object();

  const json::value* spec = obj.if_contains("specversion");
  if (spec == nullptr) return fail("missing_field", "field \"specversion\" is missing");
  if (!spec->is_string() || spec->get_string() != "1.0") {
    return fail("bad_specversion",
                "field \"specversion\" is " +
                    (spec->is_string() ? echo(spec->get_string()) : kind_name(*spec)) +
                    ", not \"1.0\"");
  }

  Event ev;
  for (auto [name, out] : {std::pair{"id", &ev.id}, std::pair{"source", &ev.source},
                           std::pair{"type", &ev.type}}) {
    Result<std::string> s = required_string(obj, name);
    if (!s) return s.status();
    *out = std::move(s).value();
  }

  Result<std::string> time_text = required_string(obj, "time");
  if (!time_text) return time_text.status();
  Result<Timestamp> time = parse_time(*time_text, "field \"time\"");
  if (!time) return time.status();
  ev.time = *time;

  json::value* data = obj.if_contains("data");
  if (data == nullptr) return fail("missing_field", "field \"data\" is missing");
  if (!data->is_object()) {
    return fail("wrong_type", "field \"data\" is " + kind_name(*data) + ", not an object");
  }
  ev.data = std::move(data->as_object());

  if (msg.key) {
    if (std::optional<Status> bad = check_text(*msg.key, "the Kafka key", limits)) return *bad;
    ev.key = *msg.key;
  }
  ev.origin = msg.origin;
  return ev;
}

Result<Event> decode_binary(const RawMessage& msg, const DecodeLimits& limits) {
  // The string_views point into msg.headers, which outlives this call.
  std::unordered_map<std::string_view, std::string_view> ce;
  for (const auto& [name, value] : msg.headers) {
    if (name.rfind("ce_", 0) != 0) continue;
    if (!value) return fail("bad_headers", "header " + echo(name) + " has a null value");
    if (!ce.emplace(name, *value).second) {
      return fail("bad_headers", "header " + echo(name) + " appears more than once");
    }
  }

  Result<json::value> parsed = parse_json_limited(*msg.value, limits);
  if (!parsed) return parsed.status();
  if (!parsed->is_object()) {
    return fail("not_object", "the message value (the event's data in binary mode) is a JSON " +
                                  kind_name(*parsed) + ", not an object");
  }

  if (const std::string_view spec = ce.at("ce_specversion"); spec != "1.0") {
    return fail("bad_specversion", "header ce_specversion is " + echo(spec) + ", not \"1.0\"");
  }

  // Same rules as the structured fields: present, non-empty, and fit for a
  // text column.
  auto attribute = [&](const char* name) -> Result<std::string> {
    auto it = ce.find(name);
    if (it == ce.end()) return fail("missing_field", "header " + std::string(name) + " is missing");
    if (it->second.empty()) {
      return fail("missing_field", "header " + std::string(name) + " is empty");
    }
    if (std::optional<Status> bad = check_text(it->second, "header " + std::string(name), limits)) {
      return *bad;
    }
    return std::string(it->second);
  };

  Event ev;
  for (auto [name, out] : {std::pair{"ce_id", &ev.id}, std::pair{"ce_source", &ev.source},
                           std::pair{"ce_type", &ev.type}}) {
    Result<std::string> s = attribute(name);
    if (!s) return s.status();
    *out = std::move(s).value();
  }
  Result<std::string> time_text = attribute("ce_time");
  if (!time_text) return time_text.status();
  Result<Timestamp> time = parse_time(*time_text, "header ce_time");
  if (!time) return time.status();
  ev.time = *time;

  ev.data = std::move(parsed->as_object());
  if (msg.key) {
    if (std::optional<Status> bad = check_text(*msg.key, "the Kafka key", limits)) return *bad;
    ev.key = *msg.key;
  }
  ev.origin = msg.origin;
  return ev;
}

bool is_binary_mode(const RawMessage& msg) {
  return std::any_of(msg.headers.begin(), msg.headers.end(),
                     [](const auto& h) { return h.first == "ce_specversion"; });
}

// SendGrid `event` → our type. Anything else (e.g. the account status
// events of newer SendGrid accounts) is dead-lettered as unknown_type.
const char* sendgrid_type(std::string_view event) {
  static constexpr std::pair<std::string_view, const char*> kTypes[] = {
      {"processed", "crm.email.processed"},
      {"deferred", "crm.email.deferred"},
      {"delivered", "crm.email.delivered"},
      {"open", "crm.email.opened"},
      {"click", "crm.email.clicked"},
      {"bounce", "crm.email.bounced"},
      {"dropped", "crm.email.dropped"},
      {"spamreport", "crm.email.spam_reported"},
      {"unsubscribe", "crm.email.unsubscribed"},
      {"group_unsubscribe", "crm.email.unsubscribed"},
      {"group_resubscribe", "crm.email.resubscribed"},
  };
  for (const auto& [name, type] : kTypes) {
    if (name == event) return type;
  }
  return nullptr;
}

Result<Event> decode_sendgrid_element(const json::value& element, const MessageOrigin& origin) {
  if (!element.is_object()) {
    return fail("not_object", "the element is a JSON " + kind_name(element) + ", not an object");
  }
  const json::object& obj = element.get_object();

  Result<std::string> event = required_string(obj, "event");
  if (!event) return event.status();
  const char* type = sendgrid_type(*event);
  if (type == nullptr) return fail("unknown_type", "unknown SendGrid event " + echo(*event));

  Result<std::string> sg_event_id = required_string(obj, "sg_event_id");
  if (!sg_event_id) return sg_event_id.status();

  const json::value* ts = obj.if_contains("timestamp");
  if (ts == nullptr) return fail("missing_field", "field \"timestamp\" is missing");
  if (!ts->is_int64() && !ts->is_uint64()) {
    return fail("wrong_type", "field \"timestamp\" is " + kind_name(*ts) +
                                  ", not an integer number of seconds");
  }
  const bool in_range =
      ts->is_int64() ? ts->get_int64() >= 0 && ts->get_int64() <= kMaxUnixSeconds : false;
  if (!in_range) {
    return fail("bad_time", "field \"timestamp\" " + json::serialize(*ts) +
                                " is not a Unix time between 1970 and 9999");
  }
  const std::int64_t seconds = ts->get_int64();

  // custom_args arrive as top-level keys of the element.
  Result<std::string> email_id = optional_string(obj, "email_id");
  if (!email_id) return email_id.status();
  Result<std::string> prospect_id = optional_string(obj, "prospect_id");
  if (!prospect_id) return prospect_id.status();
  Result<std::string> sg_message_id = optional_string(obj, "sg_message_id");
  if (!sg_message_id) return sg_message_id.status();

  // Without the custom arg, the email is found later by the message id:
  // sg_message_id is "<X-Message-Id of the send>.<SendGrid's suffix>", and
  // crm.email.sent carries the X-Message-Id (asynchronous bounces have
  // neither and cannot be matched).
  if (email_id->empty() && sg_message_id->substr(0, sg_message_id->find('.')).empty()) {
    return fail("missing_field",
                "no \"email_id\" custom arg and no \"sg_message_id\" to name the email");
  }

  Event ev;
  ev.id = std::move(sg_event_id).value();
  ev.source = "sendgrid";
  ev.type = type;
  ev.time = Timestamp{seconds * 1'000'000};
  if (!email_id->empty()) ev.data["email_id"] = *email_id;
  if (!prospect_id->empty()) ev.data["prospect_id"] = *prospect_id;
  if (!sg_message_id->empty()) ev.data["provider_message_id"] = *sg_message_id;
  const json::value* url = obj.if_contains("url");
  if (*event == "click" && url != nullptr && url->is_string()) ev.data["url"] = url->get_string();
  const json::value* reason = obj.if_contains("reason");
  if ((*event == "bounce" || *event == "dropped") && reason != nullptr && reason->is_string()) {
    ev.data["reason"] = reason->get_string();
  }
  // Only a real `true` marks an automated (Apple Mail Privacy Protection)
  // open; absent or anything else counts as a human open, as SendGrid means.
  const json::value* machine = obj.if_contains("sg_machine_open");
  ev.data["machine_open"] = machine != nullptr && machine->is_bool() && machine->get_bool();
  const json::value* recipient = obj.if_contains("email");
  if (recipient != nullptr && recipient->is_string()) ev.data["email"] = recipient->get_string();
  ev.data["sendgrid"] = element;
  ev.key = !prospect_id->empty() ? *prospect_id : !email_id->empty() ? *email_id : *sg_message_id;
  ev.origin = origin;
  return ev;
}

DecodedItem whole_message_failure(const RawMessage& msg, Status error) {
  DecodedItem item;
  item.origin = msg.origin;
  item.error = std::move(error);
  item.payload = msg.value.value_or(std::string());
  return item;
}

}  // namespace

std::string quote_value(std::string_view value) { return echo(value); }

Result<boost::json::value> parse_json_limited(std::string_view text, const DecodeLimits& limits) {
  try {
    if (static_cast<std::int64_t>(text.size()) > limits.max_message_bytes) {
      return fail("too_large", "the JSON text is " + std::to_string(text.size()) +
                                   " bytes, more than " + std::to_string(limits.max_message_bytes));
    }
    if (text.empty()) return fail("empty", "the JSON text is empty");
    if (std::size_t bad = find_invalid_utf8(text); bad != kNpos) {
      return fail("invalid_utf8", "byte " + std::to_string(bad) + " is not valid UTF-8");
    }

    json::parse_options options;
    options.max_depth =
        limits.max_json_depth > 0 ? static_cast<std::size_t>(limits.max_json_depth) : 0;
    json::basic_parser<LimitedHandler> parser(options, limits);
    json::error_code ec;
    const std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
    if (!ec && used < text.size()) ec = json::error::extra_data;
    if (parser.handler().violation()) return *parser.handler().violation();
    if (ec) return status_for_parse_error(ec, text, limits);
    return parser.handler().release();
  } catch (...) {
    return status_for_exception();
  }
}

std::vector<DecodedItem> decode_cloudevent(const RawMessage& msg, const DecodeLimits& limits) {
  std::vector<DecodedItem> out;
  DecodedItem item;
  try {
    item.origin = msg.origin;
    item.payload = msg.value.value_or(std::string());
    if (std::optional<Status> bad = check_value_limits(msg, limits)) {
      item.error = std::move(*bad);
    } else {
      Result<Event> ev = is_binary_mode(msg) ? decode_binary(msg, limits)
                                             : decode_structured(msg, limits);
      if (ev) {
        item.event = std::move(ev).value();
      } else {
        item.error = ev.status();
      }
    }
  } catch (...) {
    item.event.reset();
    item.error = status_for_exception();
  }
  out.push_back(std::move(item));
  return out;
}

std::vector<DecodedItem> decode_sendgrid(const RawMessage& msg, const DecodeLimits& limits) {
  std::vector<DecodedItem> out;
  try {
    if (std::optional<Status> bad = check_value_limits(msg, limits)) {
      out.push_back(whole_message_failure(msg, std::move(*bad)));
      return out;
    }
    Result<json::value> parsed = parse_json_limited(*msg.value, limits);
    if (!parsed) {
      out.push_back(whole_message_failure(msg, parsed.status()));
      return out;
    }
    if (!parsed->is_array()) {
      out.push_back(whole_message_failure(
          msg, fail("not_array", "the message is a JSON " + kind_name(*parsed) +
                                     ", not an array of SendGrid events")));
      return out;
    }
    const json::array& events = parsed->as_array();
    const std::size_t max_elements =
        limits.max_batch_elements > 0 ? static_cast<std::size_t>(limits.max_batch_elements) : 0;
    if (events.size() > max_elements) {
      out.push_back(whole_message_failure(
          msg, fail("too_many_elements", "the array has " + std::to_string(events.size()) +
                                             " elements, more than " +
                                             std::to_string(max_elements))));
      return out;
    }
    out.reserve(events.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      DecodedItem item;
      item.origin = msg.origin;
      item.origin.element = static_cast<int>(i);
      item.payload = json::serialize(events[i]);
      Result<Event> ev = decode_sendgrid_element(events[i], item.origin);
      if (ev) {
        item.event = std::move(ev).value();
      } else {
        item.error = ev.status();
      }
      out.push_back(std::move(item));
    }
  } catch (...) {
    // Half a batch would look like a batch whose tail vanished: fail the
    // whole message instead, so it is kept and can be replayed.
    Status error = status_for_exception();
    out.clear();
    out.push_back(whole_message_failure(msg, std::move(error)));
  }
  return out;
}

}  // namespace crm::queue
