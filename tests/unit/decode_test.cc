// Decoding of Kafka messages (queue/decode.h): every reason token, the
// poison set of TESTPLAN.md, hostile-but-valid values that must survive byte
// for byte, and what Boost.JSON 1.81 does with the edge cases we rely on.

#include "queue/decode.h"

#include <algorithm>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace crm::queue {
namespace {

namespace json = boost::json;

// 2024-05-01T12:00:00Z, computed independently of the parser under test.
constexpr std::int64_t kMay1Noon = 1714564800;

MessageOrigin origin(std::string topic = "crm.outreach.events") {
  MessageOrigin o;
  o.topic = std::move(topic);
  o.partition = 3;
  o.offset = 42;
  return o;
}

json::object valid_event() {
  return json::object{
      {"specversion", "1.0"},
      {"id", "evt-1"},
      {"source", "/crm/scraper"},
      {"type", "crm.prospect.discovered"},
      {"time", "2024-05-01T12:00:00.123456Z"},
      {"data",
       {{"prospect_id", "p-1"}, {"name", "Acme"}, {"tags", json::array{1, "two", nullptr}}}},
  };
}

RawMessage structured(std::optional<std::string> value, std::optional<std::string> key = "p-1") {
  RawMessage m;
  m.origin = origin();
  m.key = std::move(key);
  m.value = std::move(value);
  return m;
}

RawMessage structured(const json::object& event) { return structured(json::serialize(event)); }

using Headers = std::vector<std::pair<std::string, std::optional<std::string>>>;

Headers valid_headers() {
  return {{"ce_specversion", "1.0"},
          {"ce_id", "evt-9"},
          {"ce_source", "/crm/calls"},
          {"ce_type", "crm.call.scheduled"},
          {"ce_time", "2024-05-01T14:00:00+02:00"}};
}

RawMessage binary(Headers headers, std::optional<std::string> body = R"({"call_id":"c-1"})") {
  RawMessage m = structured(std::move(body));
  m.headers = std::move(headers);
  return m;
}

Headers without(Headers h, std::string_view name) {
  std::erase_if(h, [&](const auto& kv) { return kv.first == name; });
  return h;
}

// Decodes one CloudEvents message and returns its only item.
DecodedItem decode_one(const RawMessage& m, const DecodeLimits& limits = {}) {
  std::vector<DecodedItem> items = decode_cloudevent(m, limits);
  EXPECT_EQ(items.size(), 1u);
  return items.empty() ? DecodedItem{} : items.front();
}

// The reason of a message that must fail, checking the invariants every
// failure has: permanent, no event, one short line.
std::string reason_of(const RawMessage& m, const DecodeLimits& limits = {}) {
  DecodedItem item = decode_one(m, limits);
  EXPECT_FALSE(item.event.has_value());
  EXPECT_FALSE(item.error.is_ok());
  if (item.error.is_ok()) return "ok";
  EXPECT_TRUE(item.error.is_permanent());
  EXPECT_EQ(item.error.message().find('\n'), std::string::npos) << item.error.message();
  EXPECT_LT(item.error.message().size(), 200u) << item.error.message();
  EXPECT_EQ(item.payload, m.value.value_or(""));
  return item.error.reason();
}

std::string reason_of(std::string value, const DecodeLimits& limits = {}) {
  return reason_of(structured(std::move(value)), limits);
}

std::string reason_of(const json::object& event) { return reason_of(json::serialize(event)); }

std::string parse_reason(std::string_view text, const DecodeLimits& limits = {}) {
  Result<json::value> r = parse_json_limited(text, limits);
  return r ? "ok" : r.status().reason();
}

// --- structured mode --------------------------------------------------------

TEST(DecodeStructured, ValidEventLandsInEveryField) {
  RawMessage m = structured(valid_event());
  DecodedItem item = decode_one(m);
  ASSERT_TRUE(item.error.is_ok()) << item.error.message();
  ASSERT_TRUE(item.event.has_value());
  const Event& ev = *item.event;
  EXPECT_EQ(ev.id, "evt-1");
  EXPECT_EQ(ev.source, "/crm/scraper");
  EXPECT_EQ(ev.type, "crm.prospect.discovered");
  EXPECT_EQ(ev.time.micros_since_epoch, kMay1Noon * 1'000'000 + 123456);
  EXPECT_EQ(ev.data, valid_event().at("data").as_object());
  EXPECT_EQ(ev.key, "p-1");
  EXPECT_EQ(ev.origin.id(), "crm.outreach.events:3:42");
  EXPECT_EQ(item.origin.id(), "crm.outreach.events:3:42");
  EXPECT_EQ(item.payload, *m.value);
}

TEST(DecodeStructured, NoKafkaKeyGivesEmptyKey) {
  RawMessage m = structured(valid_event());
  m.key.reset();
  DecodedItem item = decode_one(m);
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  EXPECT_EQ(item.event->key, "");
}

TEST(DecodeStructured, TimeWithOffsetIsConvertedToUtc) {
  json::object e = valid_event();
  e["time"] = "2024-05-01T14:00:00+02:00";
  DecodedItem item = decode_one(structured(e));
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  EXPECT_EQ(item.event->time.micros_since_epoch, kMay1Noon * 1'000'000);
}

TEST(DecodeStructured, HostileButValidValuesRoundTripByteForByte) {
  const std::string sql = "'); DROP TABLE prospects;--";
  const std::string fake_log = "ok\n{\"level\":\"error\",\"msg\":\"worker crashed\"}";
  const std::string control = std::string("a\x01\x07\x1f\x7f", 5) + "\t\r";
  const std::string rtl = "\xE2\x80\xAE" "evil.exe";  // U+202E RIGHT-TO-LEFT OVERRIDE
  json::object e = valid_event();
  e["id"] = sql;
  e["data"] = {{"name", sql}, {"reply_text", fake_log}, {"notes", control}, {"company", rtl}};
  RawMessage m = structured(json::serialize(e), rtl + sql);

  DecodedItem item = decode_one(m);
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  EXPECT_EQ(item.event->id, sql);
  EXPECT_EQ(std::string(item.event->data.at("name").as_string()), sql);
  EXPECT_EQ(std::string(item.event->data.at("reply_text").as_string()), fake_log);
  EXPECT_EQ(std::string(item.event->data.at("notes").as_string()), control);
  EXPECT_EQ(std::string(item.event->data.at("company").as_string()), rtl);
  EXPECT_EQ(item.event->key, rtl + sql);
  EXPECT_EQ(item.payload, *m.value);
}

TEST(DecodeStructured, EmptyAndNullValues) {
  EXPECT_EQ(reason_of(structured(std::nullopt)), "empty");
  EXPECT_EQ(reason_of(std::string()), "empty");
}

TEST(DecodeStructured, MessageOverTheSizeLimitIsTooLarge) {
  DecodeLimits limits;
  limits.max_message_bytes = 64;
  std::string value = json::serialize(valid_event());
  ASSERT_GT(value.size(), 64u);
  EXPECT_EQ(reason_of(value, limits), "too_large");
  // Size is checked before anything else, even before "is it JSON".
  EXPECT_EQ(reason_of(std::string(65, 'x'), limits), "too_large");
}

TEST(DecodeStructured, TenMegabyteStringIsTooLarge) {
  json::object e = valid_event();
  e["data"] = {{"name", std::string(10 << 20, 'a')}};
  EXPECT_EQ(reason_of(e), "too_large");
}

TEST(DecodeStructured, StringOrKeyOverTheStringLimitIsTooLarge) {
  DecodeLimits limits;
  limits.max_string_bytes = 32;  // the longest string of valid_event() is 27 bytes
  json::object e = valid_event();
  e["data"] = {{"name", std::string(32, 'a')}};
  EXPECT_EQ(decode_one(structured(e), limits).error.reason(), "");
  e["data"] = {{"name", std::string(33, 'a')}};
  EXPECT_EQ(reason_of(structured(e), limits), "too_large");
  e["data"] = {{std::string(33, 'k'), 1}};
  EXPECT_EQ(reason_of(structured(e), limits), "too_large");
  // A long escaped string reaches the handler in several parts; the limit
  // counts UTF-8 bytes after unescaping (17 x "\u00e9" = 34 bytes).
  std::string escaped;
  for (int i = 0; i < 17; ++i) escaped += "\\u00e9";
  EXPECT_EQ(parse_reason("[\"" + escaped + "\"]", limits), "too_large");
}

TEST(DecodeStructured, KafkaKeyIsHeldToTheTextRules) {
  DecodeLimits limits;
  limits.max_string_bytes = 32;
  ASSERT_EQ(decode_one(structured(json::serialize(valid_event()), std::string(32, 'k')), limits)
                .error.reason(),
            "");
  EXPECT_EQ(reason_of(structured(json::serialize(valid_event()), std::string(33, 'k')), limits),
            "too_large");
  EXPECT_EQ(reason_of(structured(json::serialize(valid_event()), std::string("p\0", 2))),
            "nul_in_string");
  EXPECT_EQ(reason_of(structured(json::serialize(valid_event()), "\xff")), "invalid_utf8");
}

TEST(DecodeStructured, NotJson) {
  EXPECT_EQ(reason_of("not json"), "not_json");
  EXPECT_EQ(reason_of("   "), "not_json");
  EXPECT_EQ(reason_of("{} {}"), "not_json");
  std::string whole = json::serialize(valid_event());
  EXPECT_EQ(reason_of(whole.substr(0, whole.size() / 2)), "not_json");  // truncated
  EXPECT_EQ(reason_of(whole.substr(0, whole.size() - 1)), "not_json");  // last brace missing
  // A raw control character must be escaped in JSON.
  EXPECT_EQ(reason_of(std::string("{\"a\":\"x\0y\"}", 11)), "not_json");
}

TEST(DecodeStructured, ByteOrderMarkIsNotJson) {
  // RFC 8259 §8.1: a BOM must not be sent, and Boost 1.81 rejects it (syntax
  // error). We keep that: a producer adding one is a producer to fix.
  std::string value = "\xEF\xBB\xBF" + json::serialize(valid_event());
  EXPECT_EQ(reason_of(value), "not_json");
  EXPECT_NE(decode_one(structured(value)).error.message().find("byte order mark"),
            std::string::npos);
}

TEST(DecodeStructured, InvalidUtf8) {
  auto with_name = [](std::string raw) {
    return R"({"specversion":"1.0","id":"a","source":"s","type":"t",)"
           R"("time":"2024-05-01T12:00:00Z","data":{"name":")" +
           raw + "\"}}";
  };
  ASSERT_EQ(decode_one(structured(with_name("ok"))).error.reason(), "");
  EXPECT_EQ(reason_of(with_name("\xC3\x28")), "invalid_utf8");          // bad continuation
  EXPECT_EQ(reason_of(with_name("\xC0\xAF")), "invalid_utf8");          // overlong '/'
  EXPECT_EQ(reason_of(with_name("\xE0\x80\xAF")), "invalid_utf8");      // overlong, 3 bytes
  EXPECT_EQ(reason_of(with_name("\xED\xA0\x80")), "invalid_utf8");      // encoded surrogate
  EXPECT_EQ(reason_of(with_name("\xF4\x90\x80\x80")), "invalid_utf8");  // above U+10FFFF
  EXPECT_EQ(reason_of(with_name("\xE2\x82")), "invalid_utf8");          // truncated sequence
  EXPECT_EQ(reason_of(with_name("\xFF")), "invalid_utf8");
}

TEST(DecodeStructured, LoneSurrogatesAreInvalidUtf8) {
  // Boost 1.81 rejects every lone surrogate escape, but not with one code: a
  // lone leading one followed by anything but "\u" is a plain syntax error,
  // a lone trailing one is illegal_leading_surrogate (or
  // illegal_trailing_surrogate near the end of the input), a leading one
  // followed by a non-surrogate escape is illegal_trailing_surrogate. All of
  // them are strings that cannot be UTF-8, so all get invalid_utf8.
  auto with_name = [](std::string escaped) {
    return R"({"specversion":"1.0","id":"a","source":"s","type":"t",)"
           R"("time":"2024-05-01T12:00:00Z","data":{"name":")" +
           escaped + "\"}}";
  };
  EXPECT_EQ(reason_of(with_name("\\ud800")), "invalid_utf8");
  EXPECT_EQ(reason_of(with_name("\\udc00")), "invalid_utf8");
  EXPECT_EQ(reason_of(with_name("\\ud800\\u0041")), "invalid_utf8");
  EXPECT_EQ(reason_of(with_name("\\ud800x")), "invalid_utf8");
  EXPECT_EQ(parse_reason(R"("\ud800")"), "invalid_utf8");
  EXPECT_EQ(parse_reason(R"("\udc00")"), "invalid_utf8");
  EXPECT_EQ(parse_reason(R"({"\ud800":1})"), "invalid_utf8");
  // A valid pair is fine, and an escaped backslash is not an escape.
  EXPECT_EQ(decode_one(structured(with_name("\\ud83d\\ude00"))).error.reason(), "");
  EXPECT_EQ(decode_one(structured(with_name("\\\\ud800"))).error.reason(), "");
}

TEST(DecodeStructured, NulInStringOrKey) {
  json::object e = valid_event();
  e["data"] = {{"name", std::string("a\0b", 3)}};
  std::string value = json::serialize(e);
  ASSERT_NE(value.find("\\u0000"), std::string::npos);
  EXPECT_EQ(reason_of(value), "nul_in_string");
  e["data"] = {{std::string("k\0", 2), 1}};
  EXPECT_EQ(reason_of(e), "nul_in_string");
  EXPECT_EQ(parse_reason(R"({"id":"\u0000"})"), "nul_in_string");
}

TEST(DecodeStructured, DuplicateKeys) {
  // Boost alone keeps the last value: {"a":1,"a":2} parses to {"a":2}.
  const std::string twice_id =
      R"({"specversion":"1.0","id":"a","id":"b","source":"s","type":"t",)"
      R"("time":"2024-05-01T12:00:00Z","data":{}})";
  EXPECT_EQ(reason_of(twice_id), "duplicate_key");
  EXPECT_EQ(parse_reason(R"({"data":{"x":1,"y":2,"x":3}})"), "duplicate_key");
  // The same key in sibling or nested objects is not a duplicate.
  EXPECT_EQ(parse_reason(R"({"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]})"), "ok");
}

TEST(DecodeStructured, NestingTooDeepWithoutStackOverflow) {
  EXPECT_EQ(reason_of(std::string(100'000, '[')), "too_deep");
  std::string objects;
  for (int i = 0; i < 100'000; ++i) objects += "{\"a\":";
  EXPECT_EQ(reason_of(objects), "too_deep");
  // The limit is the number of nested arrays and objects.
  DecodeLimits limits;
  limits.max_json_depth = 32;
  EXPECT_EQ(parse_reason(std::string(32, '[') + std::string(32, ']'), limits), "ok");
  EXPECT_EQ(parse_reason(std::string(33, '[') + std::string(33, ']'), limits), "too_deep");
}

TEST(DecodeStructured, NumbersBoostCannotRepresent) {
  // Boost 1.81 parses 1e999 to +infinity (and serialize() would then write
  // "Infinity"), so the decoder refuses it; NaN and Infinity are syntax
  // errors in Boost already. Underflow (1e-999) is 0 and accepted; integers
  // beyond 64 bits silently become doubles.
  EXPECT_EQ(parse_reason("1e999"), "not_json");
  EXPECT_EQ(parse_reason("[-1e999]"), "not_json");
  EXPECT_EQ(parse_reason("NaN"), "not_json");
  EXPECT_EQ(parse_reason("[Infinity]"), "not_json");
  Result<json::value> tiny = parse_json_limited("1e-999", {});
  ASSERT_TRUE(tiny);
  EXPECT_EQ(tiny->as_double(), 0.0);
  Result<json::value> big = parse_json_limited("123456789012345678901234567890", {});
  ASSERT_TRUE(big);
  EXPECT_TRUE(big->is_double());

  json::object e = valid_event();
  std::string value = json::serialize(e);
  value.insert(value.size() - 2, R"(,"amount":1e999)");
  EXPECT_EQ(reason_of(value), "not_json");
  value = json::serialize(e);
  value.insert(value.size() - 2, R"(,"amount":NaN)");
  EXPECT_EQ(reason_of(value), "not_json");
}

TEST(DecodeStructured, NotAnObject) {
  EXPECT_EQ(reason_of("[1,2]"), "not_object");
  EXPECT_EQ(reason_of("\"event\""), "not_object");
  EXPECT_EQ(reason_of("null"), "not_object");
}

TEST(DecodeStructured, SpecVersion) {
  json::object e = valid_event();
  e["specversion"] = "0.3";
  EXPECT_EQ(reason_of(e), "bad_specversion");
  e["specversion"] = 1.0;
  EXPECT_EQ(reason_of(e), "bad_specversion");
  e.erase("specversion");
  EXPECT_EQ(reason_of(e), "missing_field");
}

TEST(DecodeStructured, MissingRequiredFields) {
  for (const char* field : {"id", "source", "type", "time", "data"}) {
    json::object e = valid_event();
    e.erase(field);
    DecodedItem item = decode_one(structured(e));
    EXPECT_EQ(item.error.reason(), "missing_field") << field;
    EXPECT_NE(item.error.message().find(field), std::string::npos) << item.error.message();
  }
  for (const char* field : {"id", "source", "type"}) {
    json::object e = valid_event();
    e[field] = "";
    EXPECT_EQ(reason_of(e), "missing_field") << field;
  }
}

TEST(DecodeStructured, WrongTypes) {
  for (const char* field : {"id", "source", "type", "time"}) {
    json::object e = valid_event();
    e[field] = 7;
    DecodedItem item = decode_one(structured(e));
    EXPECT_EQ(item.error.reason(), "wrong_type") << field;
    EXPECT_NE(item.error.message().find(field), std::string::npos) << item.error.message();
  }
  for (json::value data : {json::value(json::array{1}), json::value("x"), json::value(nullptr)}) {
    json::object e = valid_event();
    e["data"] = data;
    EXPECT_EQ(reason_of(e), "wrong_type") << json::serialize(data);
  }
}

TEST(DecodeStructured, BadTime) {
  for (const char* time : {"yesterday", "2024-02-30T00:00:00Z", "2024-05-01T12:00:00",
                           "1714564800", "2024-05-01"}) {
    json::object e = valid_event();
    e["time"] = time;
    EXPECT_EQ(reason_of(e), "bad_time") << time;
  }
}

TEST(DecodeStructured, MessageNamesTheFieldAndCapsTheEchoedValue) {
  json::object e = valid_event();
  e["time"] = std::string(10'000, '9') + "\n{\"fake\":\"log\"}";
  DecodedItem item = decode_one(structured(e));
  EXPECT_EQ(item.error.reason(), "bad_time");
  EXPECT_NE(item.error.message().find("time"), std::string::npos);
  EXPECT_EQ(item.error.message().find(std::string(65, '9')), std::string::npos);
  EXPECT_NE(item.error.message().find(std::string(64, '9')), std::string::npos);
  EXPECT_EQ(item.error.message().find('\n'), std::string::npos);

  e["time"] = "x\n\xE2\x80\xAEy";  // a newline and U+202E inside the echoed part
  item = decode_one(structured(e));
  EXPECT_EQ(item.error.reason(), "bad_time");
  EXPECT_NE(item.error.message().find("\"x\\x0a\\xe2\\x80\\xaey\""), std::string::npos)
      << item.error.message();
}

// --- binary mode ------------------------------------------------------------

TEST(DecodeBinary, ValidEvent) {
  Headers h = valid_headers();
  h.emplace_back("traceparent", std::nullopt);  // not ours: never read
  h.emplace_back("content-type", "application/json");
  RawMessage m = binary(h);
  DecodedItem item = decode_one(m);
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  EXPECT_EQ(item.event->id, "evt-9");
  EXPECT_EQ(item.event->source, "/crm/calls");
  EXPECT_EQ(item.event->type, "crm.call.scheduled");
  EXPECT_EQ(item.event->time.micros_since_epoch, kMay1Noon * 1'000'000);
  EXPECT_EQ(item.event->data, (json::object{{"call_id", "c-1"}}));
  EXPECT_EQ(item.event->key, "p-1");
  EXPECT_EQ(item.payload, *m.value);
}

TEST(DecodeBinary, HeaderOrderDoesNotMatter) {
  Headers h = valid_headers();
  std::reverse(h.begin(), h.end());
  EXPECT_TRUE(decode_one(binary(h)).event.has_value());
}

TEST(DecodeBinary, MissingHeaders) {
  for (const char* name : {"ce_id", "ce_source", "ce_type", "ce_time"}) {
    DecodedItem item = decode_one(binary(without(valid_headers(), name)));
    EXPECT_EQ(item.error.reason(), "missing_field") << name;
    EXPECT_NE(item.error.message().find(name), std::string::npos) << item.error.message();
  }
  Headers h = valid_headers();
  h[1].second = "";
  EXPECT_EQ(reason_of(binary(h)), "missing_field");
}

TEST(DecodeBinary, DoubledOrNullHeaders) {
  for (const char* name : {"ce_specversion", "ce_id", "ce_type", "ce_subject"}) {
    Headers h = valid_headers();
    h.emplace_back(name, "again");
    h.emplace_back(name, "again");
    EXPECT_EQ(reason_of(binary(h)), "bad_headers") << name;
  }
  Headers h = valid_headers();
  h.emplace_back("ce_id", "evt-9");  // even the same value twice
  EXPECT_EQ(reason_of(binary(h)), "bad_headers");
  h = valid_headers();
  h[1].second = std::nullopt;
  EXPECT_EQ(reason_of(binary(h)), "bad_headers");
}

TEST(DecodeBinary, BadAttributeValues) {
  Headers h = valid_headers();
  h[0].second = "0.3";
  EXPECT_EQ(reason_of(binary(h)), "bad_specversion");
  h = valid_headers();
  h[4].second = "tomorrow";
  EXPECT_EQ(reason_of(binary(h)), "bad_time");
  h = valid_headers();
  h[1].second = "evt\xC0\xAF";
  EXPECT_EQ(reason_of(binary(h)), "invalid_utf8");
  h = valid_headers();
  h[1].second = std::string("evt\0", 4);
  EXPECT_EQ(reason_of(binary(h)), "nul_in_string");
}

TEST(DecodeBinary, BodyIsTheDataObject) {
  EXPECT_EQ(reason_of(binary(valid_headers(), "[1]")), "not_object");
  EXPECT_EQ(reason_of(binary(valid_headers(), "{\"call_id\":")), "not_json");
  EXPECT_EQ(reason_of(binary(valid_headers(), "")), "empty");
  EXPECT_EQ(reason_of(binary(valid_headers(), std::nullopt)), "empty");
  EXPECT_EQ(reason_of(binary(valid_headers(), std::string(100'000, '['))), "too_deep");
}

// --- SendGrid ---------------------------------------------------------------

json::object sg_event(std::string event, std::string id) {
  return json::object{{"email", "ann@example.com"},
                      {"timestamp", kMay1Noon},
                      {"event", std::move(event)},
                      {"sg_event_id", std::move(id)},
                      {"sg_message_id", "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}};
}

RawMessage sendgrid_message(const json::array& events) {
  RawMessage m;
  m.origin = origin("sendgrid.events");
  m.value = json::serialize(events);
  return m;
}

std::vector<DecodedItem> decode_sg(const json::array& events, const DecodeLimits& limits = {}) {
  return decode_sendgrid(sendgrid_message(events), limits);
}

DecodedItem decode_sg_one(const json::object& element) {
  std::vector<DecodedItem> items = decode_sg(json::array{element});
  EXPECT_EQ(items.size(), 1u);
  return items.empty() ? DecodedItem{} : items.front();
}

TEST(SendgridDecode, GoodElementsDecodeAndABadOneFailsAlone) {
  json::object bad = sg_event("open", "");
  bad.erase("sg_event_id");
  json::array events{sg_event("delivered", "ev-0"), bad, sg_event("open", "ev-2")};
  std::vector<DecodedItem> items = decode_sg(events);
  ASSERT_EQ(items.size(), 3u);

  ASSERT_TRUE(items[0].event.has_value()) << items[0].error.message();
  EXPECT_EQ(items[0].event->id, "ev-0");
  EXPECT_EQ(items[0].event->type, "crm.email.delivered");
  EXPECT_EQ(items[0].origin.id(), "sendgrid.events:3:42#0");
  EXPECT_EQ(items[0].event->origin.id(), "sendgrid.events:3:42#0");

  EXPECT_FALSE(items[1].event.has_value());
  EXPECT_EQ(items[1].error.reason(), "missing_field");
  EXPECT_TRUE(items[1].error.is_permanent());
  EXPECT_NE(items[1].error.message().find("sg_event_id"), std::string::npos);
  EXPECT_EQ(items[1].origin.element, 1);
  EXPECT_EQ(items[1].payload, json::serialize(bad));
  EXPECT_EQ(json::parse(items[1].payload), json::value(bad));

  ASSERT_TRUE(items[2].event.has_value());
  EXPECT_EQ(items[2].event->type, "crm.email.opened");
  EXPECT_EQ(items[2].origin.element, 2);
  EXPECT_EQ(items[2].payload, json::serialize(events[2]));
}

TEST(SendgridDecode, EveryFieldOfAnEvent) {
  json::object e = sg_event("click", "ZGVsaXZlcmVk");
  e["url"] = "https://example.com/pricing";
  DecodedItem item = decode_sg_one(e);
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  const Event& ev = *item.event;
  EXPECT_EQ(ev.id, "ZGVsaXZlcmVk");
  EXPECT_EQ(ev.source, "sendgrid");
  EXPECT_EQ(ev.type, "crm.email.clicked");
  EXPECT_EQ(ev.time.micros_since_epoch, kMay1Noon * 1'000'000);
  // No custom args: the email is found by the message id later.
  EXPECT_FALSE(ev.data.contains("email_id"));
  EXPECT_EQ(ev.data.at("provider_message_id"), e.at("sg_message_id"));
  EXPECT_EQ(ev.data.at("url"), "https://example.com/pricing");
  EXPECT_EQ(ev.data.at("machine_open"), false);
  EXPECT_EQ(ev.data.at("email"), "ann@example.com");
  EXPECT_EQ(ev.data.at("sendgrid"), json::value(e));
  EXPECT_FALSE(ev.data.contains("prospect_id"));
  EXPECT_FALSE(ev.data.contains("reason"));
  EXPECT_EQ(ev.key, e.at("sg_message_id").as_string());
}

TEST(SendgridDecode, EventNamesMapToTypes) {
  const std::pair<const char*, const char*> table[] = {
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
  for (const auto& [event, type] : table) {
    DecodedItem item = decode_sg_one(sg_event(event, "id"));
    ASSERT_TRUE(item.event.has_value()) << event << ": " << item.error.message();
    EXPECT_EQ(item.event->type, type);
  }
}

TEST(SendgridDecode, UnknownEventIsUnknownType) {
  DecodedItem item = decode_sg_one(sg_event("account_status_change", "id"));
  EXPECT_EQ(item.error.reason(), "unknown_type");
  EXPECT_EQ(item.origin.element, 0);
  EXPECT_EQ(decode_sg_one(sg_event("Delivered", "id")).error.reason(), "unknown_type");
}

TEST(SendgridDecode, BounceReasonAndMachineOpen) {
  json::object bounce = sg_event("bounce", "b");
  bounce["reason"] = "550 5.1.1 user unknown";
  bounce["type"] = "bounce";
  DecodedItem item = decode_sg_one(bounce);
  ASSERT_TRUE(item.event.has_value());
  EXPECT_EQ(item.event->data.at("reason"), "550 5.1.1 user unknown");

  json::object dropped = sg_event("dropped", "d");
  dropped["reason"] = "Bounced Address";
  EXPECT_EQ(decode_sg_one(dropped).event->data.at("reason"), "Bounced Address");

  json::object open = sg_event("open", "o");
  open["sg_machine_open"] = true;
  EXPECT_EQ(decode_sg_one(open).event->data.at("machine_open"), true);
  open["sg_machine_open"] = false;
  EXPECT_EQ(decode_sg_one(open).event->data.at("machine_open"), false);
  open["sg_machine_open"] = "true";  // only a JSON true counts as a machine
  EXPECT_EQ(decode_sg_one(open).event->data.at("machine_open"), false);
}

TEST(SendgridDecode, CustomArgsWinOverTheMessageIdPrefix) {
  json::object e = sg_event("delivered", "x");
  e["email_id"] = "email-77";
  e["prospect_id"] = "p-5";
  DecodedItem item = decode_sg_one(e);
  ASSERT_TRUE(item.event.has_value()) << item.error.message();
  EXPECT_EQ(item.event->data.at("email_id"), "email-77");
  EXPECT_EQ(item.event->data.at("prospect_id"), "p-5");
  EXPECT_EQ(item.event->key, "p-5");

  e.erase("prospect_id");
  item = decode_sg_one(e);
  EXPECT_EQ(item.event->data.at("email_id"), "email-77");
  EXPECT_EQ(item.event->key, "email-77");

  e.erase("email_id");
  e["prospect_id"] = "p-5";
  item = decode_sg_one(e);
  EXPECT_FALSE(item.event->data.contains("email_id"));
  EXPECT_EQ(item.event->data.at("provider_message_id"), e.at("sg_message_id"));
  EXPECT_EQ(item.event->key, "p-5");
}

TEST(SendgridDecode, NothingNamesTheEmail) {
  json::object e = sg_event("bounce", "x");
  e.erase("sg_message_id");  // asynchronous bounces have none
  EXPECT_EQ(decode_sg_one(e).error.reason(), "missing_field");
  e["sg_message_id"] = ".filter0001";
  EXPECT_EQ(decode_sg_one(e).error.reason(), "missing_field");
  e["email_id"] = "email-1";
  EXPECT_TRUE(decode_sg_one(e).event.has_value());
}

TEST(SendgridDecode, ElementFieldRules) {
  json::object e = sg_event("open", "");
  EXPECT_EQ(decode_sg_one(e).error.reason(), "missing_field");
  e["sg_event_id"] = 12;
  EXPECT_EQ(decode_sg_one(e).error.reason(), "wrong_type");
  e = sg_event("open", "x");
  e.erase("event");
  EXPECT_EQ(decode_sg_one(e).error.reason(), "missing_field");
  e["event"] = json::array{"open"};
  EXPECT_EQ(decode_sg_one(e).error.reason(), "wrong_type");
  e = sg_event("open", "x");
  e.erase("timestamp");
  EXPECT_EQ(decode_sg_one(e).error.reason(), "missing_field");
  e["timestamp"] = "1714564800";
  EXPECT_EQ(decode_sg_one(e).error.reason(), "wrong_type");
  e["timestamp"] = 1714564800.5;
  EXPECT_EQ(decode_sg_one(e).error.reason(), "wrong_type");
  e["timestamp"] = -1;
  EXPECT_EQ(decode_sg_one(e).error.reason(), "bad_time");
  e["timestamp"] = std::uint64_t{18446744073709551615ull};
  EXPECT_EQ(decode_sg_one(e).error.reason(), "bad_time");
  e = sg_event("open", "x");
  e["email_id"] = 5;
  EXPECT_EQ(decode_sg_one(e).error.reason(), "wrong_type");
  EXPECT_EQ(decode_sg(json::array{1}).front().error.reason(), "not_object");
}

TEST(SendgridDecode, WholeMessageFailures) {
  RawMessage m = sendgrid_message({});
  m.value = R"({"event":"open"})";
  std::vector<DecodedItem> items = decode_sendgrid(m, {});
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].error.reason(), "not_array");
  EXPECT_EQ(items[0].origin.element, -1);
  EXPECT_EQ(items[0].payload, *m.value);

  m.value = "[{\"event\":";
  EXPECT_EQ(decode_sendgrid(m, {}).front().error.reason(), "not_json");
  m.value = "";
  EXPECT_EQ(decode_sendgrid(m, {}).front().error.reason(), "empty");
  m.value = std::nullopt;
  EXPECT_EQ(decode_sendgrid(m, {}).front().error.reason(), "empty");
  // A duplicate key anywhere spoils the whole body: it is refused while
  // parsing, before the elements exist.
  m.value = R"([{"event":"open","event":"click"}])";
  EXPECT_EQ(decode_sendgrid(m, {}).front().error.reason(), "duplicate_key");
}

TEST(SendgridDecode, EmptyArrayGivesNoItems) {
  EXPECT_TRUE(decode_sg(json::array{}).empty());
}

TEST(SendgridDecode, TooManyElements) {
  DecodeLimits limits;
  limits.max_batch_elements = 10'000;
  json::array events(20'001, json::object{});
  std::vector<DecodedItem> items = decode_sg(events, limits);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].error.reason(), "too_many_elements");
  EXPECT_EQ(items[0].origin.element, -1);

  limits.max_message_bytes = 4 << 20;  // 10,000 real events are about 1.5 MB
  json::array just_enough(10'000, sg_event("open", "x"));
  EXPECT_EQ(decode_sg(just_enough, limits).size(), 10'000u);
}

TEST(SendgridDecode, MillionElementsHitTheSizeLimitFirst) {
  std::string value = "[";
  for (int i = 0; i < 1'000'000; ++i) value += i ? ",0" : "0";
  value += "]";
  RawMessage m = sendgrid_message({});
  m.value = value;
  std::vector<DecodedItem> items = decode_sendgrid(m, {});
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].error.reason(), "too_large");
}

// --- MessageOrigin ----------------------------------------------------------

TEST(OriginId, WholeMessageAndElement) {
  MessageOrigin o = origin("crm.followups");
  EXPECT_EQ(o.id(), "crm.followups:3:42");
  o.element = 0;
  EXPECT_EQ(o.id(), "crm.followups:3:42#0");
  o.element = 17;
  o.partition = 0;
  o.offset = 9'000'000'000;
  EXPECT_EQ(o.id(), "crm.followups:0:9000000000#17");
}

}  // namespace
}  // namespace crm::queue
