#pragma once
// The retry rules for the external APIs (SPEC §6) and the rate-limit headers
// that say how long to wait. Pure functions of a Response and "now", so the
// senders' schedules are unit-tested without a clock or a network.
//
// Called by the SendGrid, Slack and HubSpot senders on their own threads
// after each Client::post.

#include <optional>
#include <string_view>

#include "daemon/core/time.h"
#include "http/client.h"

namespace crm::http {

enum class Verdict { kSuccess, kRetry, kGiveUp };

const char* to_string(Verdict verdict);

// 2xx: success. Nothing sent, no answer, a bad answer, 408, 429, 5xx: retry.
// Anything else (1xx left over, 3xx since redirects are not followed, other
// 4xx): give up, the same request will never succeed.
//
// kNoAnswer is "retry" here, but the server may have acted on the request: a
// caller without an idempotency key (SendGrid mail send) must decide itself.
Verdict classify(const Response& response);

// No server gets to park a sender longer than this, whatever it answers.
inline constexpr Millis kMaxRetryAfter{3'600'000};

// A Retry-After value: delta-seconds ("120") or an HTTP-date in IMF-fixdate
// form ("Wed, 21 Oct 2015 07:28:00 GMT"). A date in the past gives 0; values
// above kMaxRetryAfter are capped to it; anything else is nullopt.
std::optional<Millis> parse_retry_after(std::string_view value, Timestamp now);

// Unix epoch seconds, as in SendGrid's X-RateLimit-Reset ("1700000000").
// Non-negative integers up to year 9999; anything else is nullopt.
std::optional<Timestamp> parse_epoch_seconds(std::string_view value);

// How long the server asked us to wait: `retry-after` when present and valid,
// else, for a 429, the time until `x-ratelimit-reset` (SendGrid documents no
// Retry-After on its 429s). Capped at kMaxRetryAfter; nullopt when the answer
// says nothing usable (then the caller's own backoff applies).
std::optional<Millis> retry_after(const Response& response, Timestamp now);

}  // namespace crm::http
