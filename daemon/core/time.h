#pragma once
// Durations ("250ms", "3s", "5m", "2h", "3d") and RFC 3339 timestamps.
// Timestamps are kept as microseconds since the Unix epoch, UTC, which is
// PostgreSQL's own resolution, so a value round-trips through the database
// byte for byte.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace crm {

using Micros = std::chrono::microseconds;
using Millis = std::chrono::milliseconds;

// A point in time, UTC, microsecond resolution.
struct Timestamp {
  std::int64_t micros_since_epoch = 0;
  friend auto operator<=>(const Timestamp&, const Timestamp&) = default;
};

// Parses "<integer><unit>" with unit one of ms, s, m, h, d. Returns nullopt for
// anything else (no unit, negative, overflow, trailing garbage).
std::optional<Millis> parse_duration(std::string_view text);

// Formats a duration with the largest unit that divides it exactly ("3d",
// "1500ms"), so check-config prints what an operator would have written.
std::string format_duration(Millis d);

// Parses an RFC 3339 date-time ("2024-05-01T12:00:00Z",
// "2024-05-01T14:00:00.123456+02:00"). Requires a zone (Z or +hh:mm). Fractions
// beyond microseconds are truncated. Rejects impossible dates (Feb 30),
// out-of-range fields, and instants outside 0001-01-01T00:00:00Z ..
// 9999-12-31T23:59:59.999999Z, so that format_rfc3339 can spell every
// parsed time.
std::optional<Timestamp> parse_rfc3339(std::string_view text);

// Formats as "YYYY-MM-DDTHH:MM:SS.ffffffZ".
std::string format_rfc3339(Timestamp t);

// Wall-clock "now" as a Timestamp.
Timestamp now_timestamp();

}  // namespace crm
