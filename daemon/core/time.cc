#include "daemon/core/time.h"

#include <cstdio>
#include <limits>

namespace crm {
namespace {

using std::chrono::days;
using std::chrono::sys_days;
using std::chrono::year_month_day;

constexpr std::int64_t kMicrosPerSecond = 1'000'000;
constexpr std::int64_t kMicrosPerDay = 86'400 * kMicrosPerSecond;

struct DurationUnit {
  std::string_view suffix;
  std::int64_t millis;
};

// Largest first: format_duration picks the first unit that divides exactly.
constexpr DurationUnit kDurationUnits[] = {
    {"d", 24LL * 3600 * 1000}, {"h", 3600LL * 1000}, {"m", 60LL * 1000},
    {"s", 1000},               {"ms", 1},
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `count` decimal digits at `pos`; the fixed widths of RFC 3339
// are what makes "2024-5-1" or "2024-05-001" invalid.
std::optional<int> fixed_digits(std::string_view text, std::size_t& pos, int count) {
  if (pos + count > text.size()) return std::nullopt;
  int value = 0;
  for (int i = 0; i < count; ++i) {
    const char c = text[pos + i];
    if (!is_digit(c)) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return value;
}

bool expect(std::string_view text, std::size_t& pos, char c) {
  if (pos >= text.size() || text[pos] != c) return false;
  ++pos;
  return true;
}

// Floor division, so that instants before 1970 land on the right day.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
  std::size_t pos = 0;
  std::int64_t value = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    const int digit = text[pos] - '0';
    if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == 0) return std::nullopt;  // no number, or a sign
  const std::string_view suffix = text.substr(pos);
  for (const DurationUnit& unit : kDurationUnits) {
    if (suffix != unit.suffix) continue;
    if (value > std::numeric_limits<std::int64_t>::max() / unit.millis) return std::nullopt;
    return Millis{value * unit.millis};
  }
  return std::nullopt;
}

std::string format_duration(Millis d) {
  std::int64_t count = d.count();
  if (count == 0) return "0s";
  std::string sign;
  // Negative durations are never parsed, but a computed one may be logged.
  if (count < 0) {
    if (count == std::numeric_limits<std::int64_t>::min()) return std::to_string(count) + "ms";
    sign = "-";
    count = -count;
  }
  for (const DurationUnit& unit : kDurationUnits) {
    if (count % unit.millis == 0) {
      return sign + std::to_string(count / unit.millis) + std::string(unit.suffix);
    }
  }
  return sign + std::to_string(count) + "ms";  // unreachable: ms divides everything
}

std::optional<Timestamp> parse_rfc3339(std::string_view text) {
  std::size_t pos = 0;
  const auto year = fixed_digits(text, pos, 4);
  if (!year || !expect(text, pos, '-')) return std::nullopt;
  const auto month = fixed_digits(text, pos, 2);
  if (!month || !expect(text, pos, '-')) return std::nullopt;
  const auto day = fixed_digits(text, pos, 2);
  if (!day || pos >= text.size()) return std::nullopt;
  // RFC 3339 §5.6 allows a lower-case "t", and its note allows a space, which
  // is also how PostgreSQL prints timestamptz.
  const char separator = text[pos++];
  if (separator != 'T' && separator != 't' && separator != ' ') return std::nullopt;
  const auto hour = fixed_digits(text, pos, 2);
  if (!hour || !expect(text, pos, ':')) return std::nullopt;
  const auto minute = fixed_digits(text, pos, 2);
  if (!minute || !expect(text, pos, ':')) return std::nullopt;
  const auto second = fixed_digits(text, pos, 2);
  if (!second) return std::nullopt;

  std::int64_t fraction_micros = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    const std::size_t first = pos;
    std::int64_t scale = 100'000;
    while (pos < text.size() && is_digit(text[pos])) {
      // Digits beyond microseconds are truncated, not rounded, so a value
      // never moves into the next second (or day).
      fraction_micros += (text[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == first) return std::nullopt;
  }

  if (pos >= text.size()) return std::nullopt;  // the zone is required
  std::int64_t offset_seconds = 0;
  const char zone = text[pos++];
  if (zone == '+' || zone == '-') {
    const auto offset_hour = fixed_digits(text, pos, 2);
    if (!offset_hour || !expect(text, pos, ':')) return std::nullopt;
    const auto offset_minute = fixed_digits(text, pos, 2);
    if (!offset_minute || *offset_hour > 23 || *offset_minute > 59) return std::nullopt;
    offset_seconds = (*offset_hour * 3600 + *offset_minute * 60) * (zone == '-' ? -1 : 1);
  } else if (zone != 'Z' && zone != 'z') {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;

  const year_month_day date{std::chrono::year{*year},
                            std::chrono::month{static_cast<unsigned>(*month)},
                            std::chrono::day{static_cast<unsigned>(*day)}};
  // ok() knows the Gregorian calendar: it rejects Feb 29 outside leap years,
  // Apr 31, month 13, day 0.
  if (!date.ok()) return std::nullopt;
  // Second 60 is a leap second (RFC 3339 allows it); like PostgreSQL we read
  // it as the first second of the next minute, since Unix time has no slot.
  if (*hour > 23 || *minute > 59 || *second > 60) return std::nullopt;

  const std::int64_t day_number = sys_days{date}.time_since_epoch().count();
  const std::int64_t seconds_of_day = *hour * 3600 + *minute * 60 + *second;
  const std::int64_t micros = day_number * kMicrosPerDay +
                              (seconds_of_day - offset_seconds) * kMicrosPerSecond +
                              fraction_micros;
  // Year 0 and earlier (reachable through an offset: 0001-01-01T00:30+01:00)
  // have no RFC 3339 spelling in UTC and PostgreSQL refuses them. Year 10000
  // (reachable through an offset or a leap second: 9999-12-31T23:59:60Z)
  // has none either: format_rfc3339 would write a five-digit year that
  // nothing parses back, and the handlers store times in that spelling.
  constexpr std::int64_t kYear1Micros = -62135596800LL * 1'000'000;
  constexpr std::int64_t kYear9999EndMicros = 253402300799LL * 1'000'000 + 999'999;
  if (micros < kYear1Micros || micros > kYear9999EndMicros) return std::nullopt;
  return Timestamp{micros};
}

std::string format_rfc3339(Timestamp t) {
  const std::int64_t day_number = floor_div(t.micros_since_epoch, kMicrosPerDay);
  const std::int64_t micros_of_day = t.micros_since_epoch - day_number * kMicrosPerDay;
  const year_month_day date{sys_days{days{day_number}}};
  const std::int64_t seconds_of_day = micros_of_day / kMicrosPerSecond;

  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02u-%02uT%02lld:%02lld:%02lld.%06lldZ",
                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                static_cast<unsigned>(date.day()),
                static_cast<long long>(seconds_of_day / 3600),
                static_cast<long long>(seconds_of_day / 60 % 60),
                static_cast<long long>(seconds_of_day % 60),
                static_cast<long long>(micros_of_day % kMicrosPerSecond));
  return buffer;
}

Timestamp now_timestamp() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return Timestamp{std::chrono::duration_cast<Micros>(since_epoch).count()};
}

}  // namespace crm
