#pragma once
// Outbound HTTP for the third-party APIs (SendGrid mail send, Slack incoming
// webhooks, HubSpot CRM), on libcurl.
//
// Who calls it: the senders that work through the database queues (sync jobs,
// follow-ups, notifications), never the Kafka consume loop, so a slow API
// cannot hold a partition. One Client per thread: it owns one curl easy
// handle, which keeps the connections alive between calls; post() blocks the
// calling thread for at most Request::timeout.
//
// What it guarantees, because the on-call engineer will rely on it:
//   * TLS peer and host verification stay on; only http and https are spoken;
//     redirects are never followed (a 3xx is returned as an answer);
//     compressed answers are not requested (no decompression bombs).
//   * The answer (headers + body) is capped at ClientOptions::max_response_bytes.
//   * Secrets never leave through this class: the URL (a Slack webhook URL is
//     itself the secret) and the request headers (Authorization: Bearer …)
//     appear in no Response field and nothing is written to stderr.
//     Response::error is built only from the curl error code and errno; an
//     answer that echoes the URL or the Authorization credential (a 401
//     page quoting the token) has them replaced by "****" in its body and
//     header values.
//   * The Outcome tells the caller whether the request may have been acted on
//     by the server, which is what decides whether a non-idempotent call (a
//     SendGrid mail send) may be retried.

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/time.h"

namespace crm::http {

struct Request {
  std::string url;
  // Sent as given, in order. Content-Type must be set by the caller (libcurl
  // would otherwise send application/x-www-form-urlencoded for a POST body).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The whole exchange: connecting, sending, waiting, reading the answer.
  Millis timeout{10000};
};

enum class Outcome {
  // A complete HTTP answer was received (any status).
  kAnswered,
  // Nothing reached the server: connection refused, DNS failure, TLS handshake
  // failure, timeout while connecting, a refused URL scheme. Always safe to retry.
  kNotSent,
  // The request may have reached the server but no complete answer came:
  // timeout after sending, connection reset or closed without an answer, or
  // an answer cut off in its body. The server may have acted on it.
  kNoAnswer,
  // An answer that is not HTTP, or larger than the cap.
  kBadAnswer,
};

const char* to_string(Outcome outcome);

struct Response {
  Outcome outcome = Outcome::kNotSent;
  // The status of the last status line received; also set for kNoAnswer when
  // the status line and headers arrived but the body was cut off (a SendGrid
  // 202 whose body never completed was still accepted), 0 when none came.
  int status = 0;
  // Names lower-cased; a repeated header keeps its last value.
  std::map<std::string, std::string> headers;
  std::string body;
  // Human text, safe to log: never contains the URL or a request header.
  std::string error;
  // Wall time spent in post(), for the latency histogram.
  double seconds = 0;
  // True when the transfer was stopped by a timeout (connecting or later).
  bool timed_out = false;
};

// The `code` label of crm_worker_external_requests_total: the status as text
// ("202") for an answer, "timeout" when a timeout ended the call, "error"
// otherwise. Bounded: at most the 3-digit statuses plus two words.
std::string response_code_label(const Response& response);

// What one raw header line did to a Response (see read_header_line).
enum class HeaderLine {
  kStatus,   // a status line: a new header block begins, the old one is gone
  kField,    // "Name: value", stored under the lower-cased name
  kEnd,      // the blank line that ends a final (non-1xx) answer's header block
  kIgnored,  // the blank line after a 1xx, or a line without a colon
};

// Folds one header line, as libcurl hands it over (CRLF included), into
// `response`: a status line sets `status` and clears `headers` (only the
// last block, after any 100 Continue, belongs to the answer); a field is
// trimmed and stored, a repeated name keeping its last value. This is all
// the parsing the rate-limit headers get before http/retry.h and
// http/hubspot.h read them; it is public for the fuzz target.
HeaderLine read_header_line(std::string_view line, Response& response);

struct ClientOptions {
  Millis connect_timeout{5000};
  std::size_t max_response_bytes = std::size_t{1} << 20;
  std::string user_agent = "crm-worker/" CRM_WORKER_VERSION;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // POSTs `request.body` to `request.url` and waits for the answer. Never
  // throws for network or protocol failures; they are Outcomes.
  Response post(const Request& request);

 private:
  struct Handle;
  ClientOptions options_;
  std::unique_ptr<Handle> handle_;
};

}  // namespace crm::http
