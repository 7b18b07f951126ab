#include "http/retry.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace crm::http {
namespace {

constexpr std::int64_t kMicrosPerSecond = 1'000'000;
// 9999-12-31T23:59:59Z: keeps seconds * 1e6 far from int64 overflow.
constexpr std::int64_t kMaxEpochSeconds = 253'402'300'799;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A run of decimal digits, saturating at `limit` instead of overflowing (a
// Retry-After of 99999999999999999999 seconds is "a very long time", which the
// cap turns into an hour, not garbage). nullopt for empty or non-digits.
std::optional<std::int64_t> digits(std::string_view s, std::int64_t limit) {
  if (s.empty()) return std::nullopt;
  std::int64_t value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    if (value <= limit) value = value * 10 + (c - '0');
  }
  return value > limit ? limit + 1 : value;
}

std::optional<int> fixed(std::string_view s, std::size_t pos, std::size_t count) {
  if (pos + count > s.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (!is_digit(s[i])) return std::nullopt;
    value = value * 10 + (s[i] - '0');
  }
  return value;
}

// IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT", exactly 29
// characters, case-sensitive. The obsolete RFC 850 and asctime forms are not
// accepted: none of our APIs sends them, and a nullopt only means "use our own
// backoff". The day name is checked for form, not against the date.
std::optional<Timestamp> parse_imf_fixdate(std::string_view s) {
  static constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu",
                                                            "Fri", "Sat", "Sun"};
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29) return std::nullopt;
  bool day_ok = false;
  for (auto d : kDays) day_ok = day_ok || s.substr(0, 3) == d;
  if (!day_ok || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return std::nullopt;
  }
  unsigned month = 0;
  for (unsigned i = 0; i < kMonths.size(); ++i) {
    if (s.substr(8, 3) == kMonths[i]) month = i + 1;
  }
  const auto day = fixed(s, 5, 2);
  const auto year = fixed(s, 12, 4);
  const auto hour = fixed(s, 17, 2);
  const auto minute = fixed(s, 20, 2);
  const auto second = fixed(s, 23, 2);
  if (month == 0 || !day || !year || !hour || !minute || !second) return std::nullopt;
  // 60 is a leap second, which the grammar allows.
  if (*hour > 23 || *minute > 59 || *second > 60) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year{*year}, std::chrono::month{month},
                                        std::chrono::day{static_cast<unsigned>(*day)}};
  if (!ymd.ok()) return std::nullopt;  // "31 Feb"
  const std::int64_t days = std::chrono::sys_days{ymd}.time_since_epoch().count();
  const std::int64_t seconds =
      days * 86'400 + std::int64_t{*hour} * 3600 + std::int64_t{*minute} * 60 + *second;
  return Timestamp{seconds * kMicrosPerSecond};
}

// From now until `then`, rounded up to the millisecond (waking up a fraction
// early would only earn another 429), never negative, capped.
Millis until(Timestamp then, Timestamp now) {
  const std::int64_t micros = then.micros_since_epoch - now.micros_since_epoch;
  if (micros <= 0) return Millis{0};
  if (micros >= kMaxRetryAfter.count() * 1000) return kMaxRetryAfter;
  return Millis{(micros + 999) / 1000};
}

std::optional<std::string_view> header(const Response& response, const std::string& name) {
  auto it = response.headers.find(name);
  if (it == response.headers.end()) return std::nullopt;
  return std::string_view(it->second);
}

}  // namespace

const char* to_string(Verdict verdict) {
  switch (verdict) {
    case Verdict::kSuccess:
      return "success";
    case Verdict::kRetry:
      return "retry";
    case Verdict::kGiveUp:
      return "give_up";
  }
  return "unknown";
}

Verdict classify(const Response& response) {
  if (response.outcome != Outcome::kAnswered) return Verdict::kRetry;
  const int status = response.status;
  if (status >= 200 && status <= 299) return Verdict::kSuccess;
  if (status == 408 || status == 429 || (status >= 500 && status <= 599)) return Verdict::kRetry;
  return Verdict::kGiveUp;
}

std::optional<Millis> parse_retry_after(std::string_view value, Timestamp now) {
  value = trim(value);
  if (!value.empty() && is_digit(value.front())) {
    const std::int64_t cap_seconds = kMaxRetryAfter.count() / 1000;
    const auto seconds = digits(value, cap_seconds);
    if (!seconds) return std::nullopt;
    return *seconds > cap_seconds ? kMaxRetryAfter : Millis{*seconds * 1000};
  }
  const auto date = parse_imf_fixdate(value);
  if (!date) return std::nullopt;
  return until(*date, now);
}

std::optional<Timestamp> parse_epoch_seconds(std::string_view value) {
  const auto seconds = digits(trim(value), kMaxEpochSeconds);
  if (!seconds || *seconds > kMaxEpochSeconds) return std::nullopt;
  return Timestamp{*seconds * kMicrosPerSecond};
}

std::optional<Millis> retry_after(const Response& response, Timestamp now) {
  if (auto value = header(response, "retry-after")) {
    if (auto wait = parse_retry_after(*value, now)) return wait;
  }
  if (response.outcome == Outcome::kAnswered && response.status == 429) {
    if (auto value = header(response, "x-ratelimit-reset")) {
      if (auto reset = parse_epoch_seconds(*value)) return until(*reset, now);
    }
  }
  return std::nullopt;
}

}  // namespace crm::http
