#pragma once
// Decoding of Kafka messages into Events (SPEC.md §4), with input limits.
//
// Pure functions, no I/O: called on the consumer thread for every message,
// unit-tested and fuzzed on their own. Anything that cannot be decoded is a
// permanent failure with a stable reason token, which becomes the dead
// letter's reason and the `reason` label of crm_worker_dead_letters_total:
//
//   empty, too_large, too_deep, not_json, invalid_utf8, nul_in_string,
//   duplicate_key, not_object, bad_specversion, missing_field, wrong_type,
//   bad_time, bad_headers, not_array, too_many_elements, unknown_type
//
// Unknown CloudEvents types are not the decoder's business: the dispatcher
// dead-letters them with reason unknown_type. A SendGrid element is
// different: the decoder itself maps `event` to a type, so an `event` it
// cannot map is dead-lettered here with the same reason.
//
// What the JSON layer rejects, and why (Boost.JSON alone would accept some):
//   invalid_utf8   bad UTF-8 bytes (overlong, surrogates, > U+10FFFF) and
//                  lone UTF-16 surrogate escapes ("\ud800"): neither can be
//                  stored as PostgreSQL text.
//   nul_in_string  "\u0000" in a string or key: PostgreSQL text cannot hold
//                  NUL, and libpq would cut the string there.
//   duplicate_key  an object naming a key twice: Boost keeps the last one,
//                  and parsers in general do not agree on which one wins, so
//                  the producer and we could disagree on the event's id or
//                  type (RFC 7493, I-JSON, forbids duplicates).
//   not_json       anything else that is not one RFC 8259 document, including
//                  a UTF-8 BOM, NaN / Infinity, and numbers that overflow a
//                  double ("1e999"; Boost would turn it into infinity, which
//                  has no JSON or jsonb spelling).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/status.h"
#include "handlers/event.h"

namespace crm::queue {

struct DecodeLimits {
  std::int64_t max_message_bytes = 1 << 20;
  int max_json_depth = 32;
  std::int64_t max_string_bytes = 64 * 1024;
  int max_batch_elements = 10000;
};

// A Kafka message as the decoder sees it (no librdkafka types).
struct RawMessage {
  MessageOrigin origin;
  std::optional<std::string> key;
  std::optional<std::string> value;  // nullopt = Kafka null value
  // Headers in wire order; a name may repeat (which binary mode rejects).
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;
  // The message's Kafka timestamp (producer or log-append time), in epoch
  // milliseconds; when the broker gives none, the time it was polled.
  std::int64_t timestamp_ms = 0;
};

// One decoded piece of a message: an Event, or the Status saying why this
// piece is a dead letter. A CloudEvents message gives exactly one item; a
// SendGrid array gives one per element (a bad element does not spoil the
// good ones; an empty array gives no items), or a single failed item if the
// array itself is bad.
struct DecodedItem {
  MessageOrigin origin;
  std::optional<Event> event;
  Status error;  // ok iff event has a value
  // The bytes to keep in the dead letter for this item (whole message, or
  // the serialized element of a SendGrid array).
  std::string payload;
};

// Structured mode: the value is a CloudEvents 1.0 JSON object. Binary mode:
// `ce_specversion` header present, the value is `data`. Both require `time`
// (the apply order of an entity's events depends on it) and a `data` object.
// Header names are matched exactly (the Kafka binding spells them lowercase);
// headers outside ce_* are never read, so they are never a reason to reject.
// The Kafka key and the ce_* header values become text columns, so they are
// held to the same rules as JSON strings (UTF-8, no NUL, length).
std::vector<DecodedItem> decode_cloudevent(const RawMessage& msg, const DecodeLimits& limits);

// A SendGrid Event Webhook body: a JSON array of events. Each element maps to
// a crm.email.* event (see handlers/ for the effects); `sg_event_id` is the
// event id; custom_args prospect_id / email_id, else the sg_message_id
// prefix (before the first '.') names the email. An element's payload is the
// element alone, serialized: replaying it means wrapping it in an array.
std::vector<DecodedItem> decode_sendgrid(const RawMessage& msg, const DecodeLimits& limits);

// Parses JSON text under the limits (size, depth, string length, no NUL,
// valid UTF-8). Shared by both decoders and by dead-letter replay.
Result<boost::json::value> parse_json_limited(std::string_view text, const DecodeLimits& limits);

// An input value quoted for an error message (which reaches the log and
// dead_letters.error): its first 64 bytes, every byte outside printable
// ASCII escaped as \xNN, "..." when cut. So a hostile value can neither
// break the log line (newline), reorder it (U+202E), nor end it inside a
// UTF-8 sequence. The decoder quotes every value it echoes this way.
std::string quote_value(std::string_view value);

}  // namespace crm::queue
