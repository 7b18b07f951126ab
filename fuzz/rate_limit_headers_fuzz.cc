// Fuzz target: the rate-limit headers of the HubSpot, SendGrid and Slack
// answers, from the raw header block to the wait: http::read_header_line
// (each line as libcurl hands it over), then http::retry_after
// (Retry-After, SendGrid's X-RateLimit-Reset on a 429) and
// hubspot::rate_headers (X-HubSpot-RateLimit-*). The input is the header
// block, lines ending in '\n'; seeds start with a status line.
// Beyond not crashing:
//   * header names are lower-case and trimmed, values trimmed;
//   * no wait is negative or longer than kMaxRetryAfter, and a wait never
//     grows as time passes;
//   * HubSpot's budget values are within the bounds the sync executor
//     trusts (a positive max, a remaining count, a 100 ms .. 1 day window).

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/support.h"
#include "http/client.h"
#include "http/hubspot.h"
#include "http/retry.h"

namespace {

// 2024-05-01T12:00:00Z.
constexpr crm::Timestamp kNow{1714564800LL * 1'000'000};
constexpr crm::Timestamp kSecondLater{kNow.micros_since_epoch + 1'000'000};

// No optional whitespace (RFC 9110: spaces and tabs) around it, and not the
// line's CRLF.
bool trimmed(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t'; };
  return s.empty() ||
         (!space(s.front()) && !space(s.back()) && s.back() != '\r' && s.back() != '\n');
}

void check_wait(const std::optional<crm::Millis>& wait) {
  if (wait) CRM_FUZZ_CHECK(*wait >= crm::Millis{0} && *wait <= crm::http::kMaxRetryAfter);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  std::string_view block(reinterpret_cast<const char*>(data), size);
  http::Response response;
  response.outcome = http::Outcome::kAnswered;
  while (!block.empty()) {
    const std::size_t end = block.find('\n');
    const std::size_t length = end == std::string_view::npos ? block.size() : end + 1;
    http::read_header_line(block.substr(0, length), response);
    block.remove_prefix(length);
  }

  CRM_FUZZ_CHECK(response.status >= 0 && response.status <= 999);
  for (const auto& [name, value] : response.headers) {
    CRM_FUZZ_CHECK(trimmed(name) && trimmed(value));
    for (const char c : name) {
      const auto byte = static_cast<unsigned char>(c);
      CRM_FUZZ_CHECK(c != ':' && std::tolower(byte) == byte);
    }
    check_wait(http::parse_retry_after(value, kNow));
    if (const std::optional<Timestamp> reset = http::parse_epoch_seconds(value)) {
      CRM_FUZZ_CHECK(reset->micros_since_epoch >= 0 &&
                     reset->micros_since_epoch <= 253402300799LL * 1'000'000);
      CRM_FUZZ_CHECK(reset->micros_since_epoch % 1'000'000 == 0);
    }
  }

  const std::optional<Millis> wait = http::retry_after(response, kNow);
  const std::optional<Millis> later = http::retry_after(response, kSecondLater);
  check_wait(wait);
  CRM_FUZZ_CHECK(wait.has_value() == later.has_value());
  if (wait) CRM_FUZZ_CHECK(*later <= *wait);
  if (const auto it = response.headers.find("retry-after"); it != response.headers.end()) {
    // A valid Retry-After wins over everything else.
    if (const auto own = http::parse_retry_after(it->second, kNow)) CRM_FUZZ_CHECK(wait == own);
  }

  const hubspot::RateHeaders budget = hubspot::rate_headers(response);
  if (budget.max) CRM_FUZZ_CHECK(*budget.max > 0 && *budget.max <= 1'000'000'000);
  if (budget.remaining) {
    CRM_FUZZ_CHECK(*budget.remaining >= 0 && *budget.remaining <= 1'000'000'000);
  }
  if (budget.interval) {
    CRM_FUZZ_CHECK(*budget.interval >= Millis{100} && *budget.interval <= Millis{86'400'000});
  }
  // Without a body there is no policy to read.
  CRM_FUZZ_CHECK(!hubspot::daily_limit_hit(response));
  return 0;
}
