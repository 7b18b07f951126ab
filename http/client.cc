#include "http/client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace crm::http {
namespace {

// curl_global_init is not thread-safe before 7.84 and must run before any
// other curl call; every Client constructor goes through here.
void global_init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("curl_global_init failed");
    }
  });
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// A header line that could smuggle a second header or a second request into
// the stream. Names also must not carry the separator.
bool unsafe_header(const std::string& name, const std::string& value) {
  auto bad = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
  return name.empty() || std::any_of(name.begin(), name.end(), bad) ||
         name.find(':') != std::string::npos || name.find(' ') != std::string::npos ||
         std::any_of(value.begin(), value.end(), bad);
}

// What the callbacks fill in during one transfer.
struct Transfer {
  Response* response = nullptr;
  std::size_t cap = 0;
  std::size_t bytes = 0;
  bool over_cap = false;
  bool headers_complete = false;  // the blank line after a final (non-1xx) status
  int requests_started = 0;
  bool resend_refused = false;

  bool take(std::size_t n) {
    bytes += n;
    if (bytes > cap) over_cap = true;
    return !over_cap;
  }
};

size_t collect_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (!t->take(n)) return 0;  // any other count aborts with CURLE_WRITE_ERROR
  switch (read_header_line(std::string_view(data, n), *t->response)) {
    case HeaderLine::kStatus: t->headers_complete = false; break;
    case HeaderLine::kEnd: t->headers_complete = true; break;
    case HeaderLine::kField: case HeaderLine::kIgnored: break;
  }
  return n;
}

size_t collect_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (!t->take(n)) return 0;
  t->response->body.append(data, n);
  return n;
}

// The callbacks run inside libcurl's C frames, which an exception must not
// cross; bad_alloc aborts the transfer (CURLE_WRITE_ERROR) instead.
size_t on_header(char* data, size_t size, size_t count, void* user) noexcept {
  try {
    return collect_header(data, size, count, user);
  } catch (...) {
    return 0;
  }
}

size_t on_body(char* data, size_t size, size_t count, void* user) noexcept {
  try {
    return collect_body(data, size, count, user);
  } catch (...) {
    return 0;
  }
}

// Called by libcurl each time it is about to send the request on a
// connection. A second call within one post() is libcurl's own silent retry:
// when a reused keep-alive connection dies with nothing received, it sends the
// request again on a fresh connection (Curl_retry_request, up to 5 times, also
// for a POST whose body was already sent). That is right when the server had
// closed the idle connection before reading the request, and wrong when the
// server took the request and then went away: a SendGrid mail send, which has
// no idempotency key, would go out twice. No option turns that retry off, so
// it is refused here: one post() sends the request at most once, and the
// caller's own retry rules (with backoff, counted in retries_total) decide.
int on_prereq(void* user, char*, char*, int, int) {
  auto* t = static_cast<Transfer*>(user);
  if (++t->requests_started > 1) {
    t->resend_refused = true;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

// Errors after which the server did say something, just not HTTP we accept.
bool is_bad_answer(CURLcode rc) {
  switch (rc) {
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_FILESIZE_EXCEEDED:  // Content-Length above CURLOPT_MAXFILESIZE_LARGE
      return true;
    default:
      return false;
  }
}

// The only source of Response::error for curl failures. libcurl's
// CURLOPT_ERRORBUFFER is deliberately not used: its messages name the host,
// the port and sometimes parts of the URL ("Could not resolve host: …",
// "URL rejected: …"), and the URL of a Slack webhook is a credential.
// curl_easy_strerror returns fixed text per code; errno text is fixed too.
// CURLINFO_OS_ERRNO survives curl_easy_reset, so it is only trusted for a
// failed connect, which always sets it.
std::string describe(CURLcode rc, long os_errno) {
  std::string text = curl_easy_strerror(rc);
  if (rc == CURLE_COULDNT_CONNECT && os_errno != 0) {
    char buf[128];
    // GNU strerror_r returns the message pointer (maybe not into buf).
    const char* msg = strerror_r(static_cast<int>(os_errno), buf, sizeof buf);
    text += " (";
    text += msg;
    text += ")";
  }
  return text;
}

// Credentials shorter than this are not cut out of answers: they would
// match ordinary text (a test's token "t"), and no API issues keys that short.
constexpr std::size_t kMinRedactedBytes = 8;
// Path segments this long are cut out on their own: a webhook's token is
// (Slack's are 24 characters), an API's words are not.
constexpr std::size_t kMinSegmentBytes = 16;

void cut_out(std::string& text, std::string_view secret) {
  if (secret.size() < kMinRedactedBytes) return;
  for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + 4)) {
    text.replace(pos, secret.size(), "****");
  }
}

// How an echo may spell a secret besides as it was sent: JSON-escaped
// (some encoders write "/" as "\/"), or percent-encoded (a URL quoted in
// a query string or a Location).
std::vector<std::string> spellings(std::string_view secret) {
  std::string json, percent, percent_lower;
  for (const char c : secret) {
    if (c == '"' || c == '\\' || c == '/') json += '\\';
    json += c;
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      percent += c;
      percent_lower += c;
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      static constexpr char kHexLower[] = "0123456789abcdef";
      percent += {'%', kHex[u >> 4], kHex[u & 15]};
      percent_lower += {'%', kHexLower[u >> 4], kHexLower[u & 15]};
    }
  }
  std::vector<std::string> out{std::string(secret)};
  for (std::string* v : {&json, &percent, &percent_lower}) {
    if (*v != secret && std::find(out.begin(), out.end(), *v) == out.end()) out.push_back(std::move(*v));
  }
  return out;
}

// A server may send back what it was sent (a 401 page quoting the token, a
// gateway echoing the request), and callers keep parts of answers: HubSpot's
// error message goes to the log and to sync_queue.last_error. So the
// request's credentials are cut out of the answer here, once for every API:
// each Authorization value and its credential without the scheme; the URL,
// its path (a Slack webhook URL is itself the secret, and a 404 page may
// quote only the path) and any long path segment (the webhook's token);
// each in every spelling above.
void cut_out_echoes(const Request& request, Response& response) {
  std::vector<std::string_view> secrets{request.url};
  const std::string_view url = request.url;
  if (const auto scheme = url.find("://"); scheme != std::string_view::npos) {
    if (const auto slash = url.find('/', scheme + 3); slash != std::string_view::npos) {
      const std::string_view path = url.substr(slash);
      secrets.push_back(path);
      for (std::size_t at = 0; at < path.size();) {
        auto end = path.find_first_of("/?#", at + 1);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view segment = path.substr(at + 1, end - at - 1);
        if (segment.size() >= kMinSegmentBytes) secrets.push_back(segment);
        at = end;
      }
    }
  }
  for (const auto& [name, value] : request.headers) {
    if (lower(name) != "authorization") continue;
    const std::string_view v = value;
    secrets.push_back(v);
    if (const auto space = v.find(' '); space != std::string_view::npos) {
      secrets.push_back(trim(v.substr(space + 1)));
    }
  }
  // Longest first, so that a whole URL goes as one "****" before its parts.
  std::vector<std::string> all;
  for (const std::string_view secret : secrets) {
    for (std::string& s : spellings(secret)) all.push_back(std::move(s));
  }
  std::stable_sort(all.begin(), all.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& secret : all) {
    cut_out(response.body, secret);
    for (auto& [name, value] : response.headers) cut_out(value, secret);
  }
}

}  // namespace

HeaderLine read_header_line(std::string_view line, Response& response) {
  if (line.rfind("HTTP/", 0) == 0) {
    // A new status line: a 100 Continue (or a proxy's answer) came first;
    // only the last header block belongs to the answer.
    response.headers.clear();
    const auto space = line.find(' ');
    int status = 0;
    if (space != std::string_view::npos && space + 4 <= line.size()) {
      for (size_t i = space + 1; i < space + 4; ++i) {
        if (line[i] < '0' || line[i] > '9') {
          status = 0;
          break;
        }
        status = status * 10 + (line[i] - '0');
      }
    }
    response.status = status;
    return HeaderLine::kStatus;
  }
  if (trim(line).empty()) return response.status >= 200 ? HeaderLine::kEnd : HeaderLine::kIgnored;
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return HeaderLine::kIgnored;  // obsolete line folding
  response.headers[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  return HeaderLine::kField;
}

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kAnswered:
      return "answered";
    case Outcome::kNotSent:
      return "not_sent";
    case Outcome::kNoAnswer:
      return "no_answer";
    case Outcome::kBadAnswer:
      return "bad_answer";
  }
  return "unknown";
}

std::string response_code_label(const Response& response) {
  if (response.outcome == Outcome::kAnswered && response.status >= 100 && response.status <= 999) {
    return std::to_string(response.status);
  }
  return response.timed_out ? "timeout" : "error";
}

struct Client::Handle {
  CURL* easy = nullptr;
  ~Handle() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

Client::Client(ClientOptions options) : options_(std::move(options)), handle_(new Handle) {
  global_init_once();
  handle_->easy = curl_easy_init();
  if (handle_->easy == nullptr) throw std::runtime_error("curl_easy_init failed");
}

Client::~Client() = default;

Response Client::post(const Request& request) {
  const auto started = std::chrono::steady_clock::now();
  Response response;
  auto finish = [&]() -> Response {
    cut_out_echoes(request, response);
    response.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return std::move(response);
  };

  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto append = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) throw std::bad_alloc();
    (void)headers.release();
    headers.reset(next);
  };
  for (const auto& [name, value] : request.headers) {
    if (unsafe_header(name, value)) {
      response.outcome = Outcome::kNotSent;
      response.error = "request header rejected: bad character in name or value";
      return finish();
    }
    // "Name:" would make curl drop the header; "Name;" sends it empty.
    std::string line = name;
    line += value.empty() ? ";" : ": ";
    line += value;
    append(line);
  }
  // No "Expect: 100-continue" on large bodies: it costs a round trip (or a
  // 1 s wait on servers that ignore it) and buys nothing for small JSON posts.
  append("Expect:");

  CURL* easy = handle_->easy;
  // Keeps the live connections, DNS and TLS session caches; drops every option.
  curl_easy_reset(easy);

  Transfer transfer;
  transfer.response = &response;
  transfer.cap = options_.max_response_bytes;

  const long timeout_ms = std::max<long>(1, static_cast<long>(request.timeout.count()));
  const long connect_ms = std::max<long>(1, static_cast<long>(options_.connect_timeout.count()));

  curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  // Already libcurl's defaults; set so that no later edit can weaken them silently.
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  // Timeouts must not use SIGALRM in a multi-threaded daemon.
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, std::min(connect_ms, timeout_ms));
  curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  // Rejects a declared Content-Length above the cap before reading the body;
  // the callbacks enforce the cap on what actually arrives.
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(options_.max_response_bytes));
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, &on_prereq);
  curl_easy_setopt(easy, CURLOPT_PREREQDATA, &transfer);

  const CURLcode rc = curl_easy_perform(easy);
  // Nothing set above may outlive this call: the header list dies with
  // `headers`, the body and URL belong to the caller.
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);

  long request_size = 0;
  long os_errno = 0;
  curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);

  if (rc == CURLE_OK) {
    if (transfer.headers_complete) {
      response.outcome = Outcome::kAnswered;
    } else {
      response.outcome = Outcome::kBadAnswer;
      response.error = "answer without a complete HTTP header block";
    }
    return finish();
  }

  response.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
  if (transfer.over_cap || rc == CURLE_FILESIZE_EXCEEDED) {
    response.outcome = Outcome::kBadAnswer;
    response.error = "answer larger than " + std::to_string(options_.max_response_bytes) + " bytes";
  } else if (transfer.resend_refused) {
    response.outcome = Outcome::kNoAnswer;
    response.error = "connection lost before any answer (kept-alive connection; not resent)";
  } else if (request_size == 0) {
    response.outcome = Outcome::kNotSent;
    response.error = describe(rc, os_errno);
  } else if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
    // After sending, this is libcurl refusing an HTTP/0.9 (status-less) answer.
    response.outcome = Outcome::kBadAnswer;
    response.error = "answer is not HTTP";
  } else if (is_bad_answer(rc)) {
    response.outcome = Outcome::kBadAnswer;
    response.error = describe(rc, os_errno);
  } else {
    response.outcome = Outcome::kNoAnswer;
    response.error = describe(rc, os_errno);
  }
  // A partial answer is not an answer; the status and headers stay for the
  // caller who needs to know that the server had already said 202.
  response.body.clear();
  return finish();
}

}  // namespace crm::http
