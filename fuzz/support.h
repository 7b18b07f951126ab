#pragma once
// What the fuzz targets share: the invariant check, oracles written apart
// from the code under test, and the checks every decoded item and every
// handled event must pass. A violated invariant prints one line naming it
// and aborts; libFuzzer reports that as a crash and saves the input
// (scripts/fuzz.sh copies it to fuzz/crashes/).
//
// Called from LLVMFuzzerTestOneInput, one input at a time, on libFuzzer's
// only thread.

#include <string_view>

#include <boost/json.hpp>

#include "queue/decode.h"

namespace crm::fuzz {

[[noreturn]] void violated(const char* condition, const char* file, int line);

}  // namespace crm::fuzz

// A macro only so that the report can quote the condition and its line.
#define CRM_FUZZ_CHECK(condition) \
  ((condition) ? static_cast<void>(0) : ::crm::fuzz::violated(#condition, __FILE__, __LINE__))

namespace crm::fuzz {

// Well-formed UTF-8 (Unicode 3.9, Table 3-7), by decoding each code point.
// Deliberately not the decoder's own check, so a mistake cannot hide in both.
bool is_utf8(std::string_view s);

// What a PostgreSQL text column and a jsonb string accept: UTF-8, no NUL.
bool is_storable_text(std::string_view s);

// Printable ASCII only. The decoder and the handlers promise this of their
// error messages (values are echoed escaped), so a payload can neither break
// a log line nor reorder it with U+202E.
bool is_printable_ascii(std::string_view s);

// Equal JSON, except that a double may move by an ULP or two: Boost 1.81
// does not round every decimal correctly (precise number parsing came in
// 1.83), so a number with more significant digits than a double holds may
// parse to a neighbour of the double that was serialized.
bool same_json(const boost::json::value& a, const boost::json::value& b);

// The dead-letter reasons queue/decode.h and handlers/handler.h document.
bool is_documented_reason(std::string_view reason);

// What the decoding targets run under: the production depth limit, but
// message and string caps small enough that inputs of the lengths
// scripts/fuzz.sh allows (-max_len) cross them.
queue::DecodeLimits fuzz_limits();

// Checks what holds for every item a decoder returns: an event and no error,
// or a permanent error with a documented reason and a short printable
// message and no event. An event must have what the handlers and the store
// rely on (ids, a time that formats and parses back, data that is storable
// jsonb); it is then run through its handler, as the dispatcher does, and
// the fact or the refusal is checked in turn.
void check_item(const queue::DecodedItem& item, const queue::DecodeLimits& limits);

}  // namespace crm::fuzz
