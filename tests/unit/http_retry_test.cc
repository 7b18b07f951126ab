// The retry rules of SPEC §6 and the rate-limit headers, computed from a
// Response and a fixed "now": no clock, no network.

#include "http/retry.h"

#include <gtest/gtest.h>

namespace crm::http {
namespace {

constexpr std::int64_t kSecond = 1'000'000;
// Wed, 21 Oct 2015 07:28:00 GMT.
constexpr Timestamp kDate{1'445'412'480 * kSecond};

Response answered(int status, std::map<std::string, std::string> headers = {}) {
  Response r;
  r.outcome = Outcome::kAnswered;
  r.status = status;
  r.headers = std::move(headers);
  return r;
}

Response failed(Outcome outcome) {
  Response r;
  r.outcome = outcome;
  return r;
}

TEST(HttpRetryClassify, TwoHundredsSucceed) {
  for (int status : {200, 201, 202, 204, 299}) {
    EXPECT_EQ(classify(answered(status)), Verdict::kSuccess) << status;
  }
}

TEST(HttpRetryClassify, TransportFailuresTimeoutsThrottlingAndServerErrorsRetry) {
  for (Outcome o : {Outcome::kNotSent, Outcome::kNoAnswer, Outcome::kBadAnswer}) {
    EXPECT_EQ(classify(failed(o)), Verdict::kRetry) << to_string(o);
  }
  for (int status : {408, 429, 500, 502, 503, 504, 599}) {
    EXPECT_EQ(classify(answered(status)), Verdict::kRetry) << status;
  }
}

TEST(HttpRetryClassify, OtherStatusesGiveUp) {
  // 3xx: redirects are not followed, so the same request would get the same answer.
  for (int status : {100, 301, 302, 304, 400, 401, 403, 404, 409, 410, 413, 422, 600}) {
    EXPECT_EQ(classify(answered(status)), Verdict::kGiveUp) << status;
  }
}

TEST(HttpRetryClassify, NoAnswerRetriesEvenWithAStatusFromACutOffAnswer) {
  // The status line of a 202 arrived, the body did not: not an answer.
  Response r = failed(Outcome::kNoAnswer);
  r.status = 202;
  EXPECT_EQ(classify(r), Verdict::kRetry);
}

TEST(HttpRetryAfter, DeltaSeconds) {
  EXPECT_EQ(parse_retry_after("2", kDate), Millis{2000});
  EXPECT_EQ(parse_retry_after("0", kDate), Millis{0});
  EXPECT_EQ(parse_retry_after(" 120 ", kDate), Millis{120'000}) << "optional whitespace";
  EXPECT_EQ(parse_retry_after("007", kDate), Millis{7000});
  EXPECT_EQ(parse_retry_after("3600", kDate), Millis{3'600'000});
}

TEST(HttpRetryAfter, HugeValuesAreCappedAtAnHour) {
  EXPECT_EQ(parse_retry_after("3601", kDate), kMaxRetryAfter);
  EXPECT_EQ(parse_retry_after("86400", kDate), kMaxRetryAfter);
  EXPECT_EQ(parse_retry_after("99999999999999999999999999", kDate), kMaxRetryAfter)
      << "no overflow";
  EXPECT_EQ(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", kDate), kMaxRetryAfter);
}

TEST(HttpRetryAfter, HttpDateInTheFuture) {
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", kDate), Millis{30'000});
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", kDate), Millis{60'000});
  // Across a month end and a leap day.
  const Timestamp feb28{Timestamp{(1'456'703'999) * kSecond}};  // 2016-02-28T23:59:59Z
  EXPECT_EQ(parse_retry_after("Mon, 29 Feb 2016 00:00:09 GMT", feb28), Millis{10'000});
  // Rounded up to the millisecond: waking a fraction early only earns another 429.
  const Timestamp just_after{kDate.micros_since_epoch + 1};
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:01 GMT", just_after), Millis{1000});
}

TEST(HttpRetryAfter, HttpDateInThePastIsZero) {
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", kDate), Millis{0});
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kDate), Millis{0});
}

TEST(HttpRetryAfter, GarbageIsNullopt) {
  for (const char* value : {
           "",
           " ",
           "-1",
           "+5",
           "1.5",
           "2s",
           "2 3",
           "soon",
           "0x10",
           "Wed, 21 Oct 2015 07:28:00 UTC",      // zone must be GMT
           "Wed, 21 Oct 2015 07:28:00",          // no zone
           "Wed, 21 Oct 15 07:28:00 GMT",        // two-digit year
           "Wed, 31 Feb 2015 07:28:00 GMT",      // no such day
           "Wed, 21 Okt 2015 07:28:00 GMT",      // no such month
           "Wed, 21 Oct 2015 24:00:00 GMT",      // hour out of range
           "Wed, 21 Oct 2015 07:60:00 GMT",      // minute out of range
           "Xyz, 21 Oct 2015 07:28:00 GMT",      // no such day name
           "Wednesday, 21-Oct-15 07:28:00 GMT",  // RFC 850: obsolete, not accepted
           "Wed Oct 21 07:28:00 2015",           // asctime: obsolete, not accepted
           "2015-10-21T07:28:00Z",
       }) {
    EXPECT_EQ(parse_retry_after(value, kDate), std::nullopt) << '"' << value << '"';
  }
}

TEST(HttpRetryEpochSeconds, ParsesUnixSeconds) {
  EXPECT_EQ(parse_epoch_seconds("1445412480"), kDate);
  EXPECT_EQ(parse_epoch_seconds(" 0 "), Timestamp{0});
  EXPECT_EQ(parse_epoch_seconds("253402300799"), Timestamp{253'402'300'799 * kSecond});
}

TEST(HttpRetryEpochSeconds, RejectsGarbageNegativeAndBeyondYear9999) {
  for (const char* value :
       {"", "-1", "1.5", "1445412480ms", "abc", "253402300800", "99999999999999999999999"}) {
    EXPECT_EQ(parse_epoch_seconds(value), std::nullopt) << '"' << value << '"';
  }
}

TEST(HttpRetryAfterResponse, RetryAfterHeaderWins) {
  const auto r = answered(429, {{"retry-after", "2"}, {"x-ratelimit-reset", "1445412540"}});
  EXPECT_EQ(retry_after(r, kDate), Millis{2000});
  // Also on a 503, where Retry-After is just as meaningful.
  EXPECT_EQ(retry_after(answered(503, {{"retry-after", "5"}}), kDate), Millis{5000});
}

TEST(HttpRetryAfterResponse, SendGridResetOn429) {
  // SendGrid documents no Retry-After: wait until X-RateLimit-Reset.
  const auto r = answered(429, {{"x-ratelimit-reset", "1445412540"}});
  EXPECT_EQ(retry_after(r, kDate), Millis{60'000});
  EXPECT_EQ(retry_after(answered(429, {{"x-ratelimit-reset", "1445412000"}}), kDate), Millis{0})
      << "a reset in the past";
  EXPECT_EQ(retry_after(answered(429, {{"x-ratelimit-reset", "9999999999"}}), kDate),
            kMaxRetryAfter);
}

TEST(HttpRetryAfterResponse, InvalidRetryAfterFallsBackToReset) {
  const auto r = answered(429, {{"retry-after", "soon"}, {"x-ratelimit-reset", "1445412490"}});
  EXPECT_EQ(retry_after(r, kDate), Millis{10'000});
}

TEST(HttpRetryAfterResponse, ResetIgnoredUnlessThrottled) {
  // Every SendGrid answer carries X-RateLimit-Reset; only a 429 means "wait".
  EXPECT_EQ(retry_after(answered(202, {{"x-ratelimit-reset", "1445412540"}}), kDate), std::nullopt);
  EXPECT_EQ(retry_after(answered(503, {{"x-ratelimit-reset", "1445412540"}}), kDate), std::nullopt);
  EXPECT_EQ(retry_after(answered(429), kDate), std::nullopt);
  EXPECT_EQ(retry_after(failed(Outcome::kNoAnswer), kDate), std::nullopt);
}

TEST(HttpRetryCodeLabel, StatusTimeoutOrError) {
  EXPECT_EQ(response_code_label(answered(202)), "202");
  EXPECT_EQ(response_code_label(answered(503)), "503");
  Response timed_out = failed(Outcome::kNoAnswer);
  timed_out.timed_out = true;
  EXPECT_EQ(response_code_label(timed_out), "timeout");
  EXPECT_EQ(response_code_label(failed(Outcome::kNotSent)), "error");
  Response cut_off = failed(Outcome::kNoAnswer);
  cut_off.status = 202;
  EXPECT_EQ(response_code_label(cut_off), "error") << "a cut-off answer is not a 202";
  EXPECT_EQ(response_code_label(failed(Outcome::kBadAnswer)), "error");
}

}  // namespace
}  // namespace crm::http
