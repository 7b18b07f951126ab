// The outbound HTTP client against the fake API server, over real loopback
// sockets. Guarantees checked: each way a third-party API can behave (answer,
// throttle, fail, stall, hang up, talk garbage, answer too much, redirect,
// not be there at all) comes back as the Outcome the retry rules expect,
// within the timeout; redirects are never followed, to the same server or
// another; a certificate no trusted CA signed is refused; and the secrets
// (the URL path of a Slack webhook, the Authorization header) never appear
// in what the client reports, even when the server echoes them back. No
// PostgreSQL needed.

#include "http/client.h"
#include "http/retry.h"
#include "tests/harness/fake_http.h"
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <cctype>
#include <cstdio>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace crm::http {
namespace {

using crm::test::Answer;
using crm::test::FakeHttpServer;
using std::chrono::milliseconds;

constexpr milliseconds kShortTimeout{300};
const std::string kPath = "/v3/mail/send";

class HttpClientTest : public ::testing::Test {
 protected:
  Request request(const std::string& path = kPath) {
    Request r;
    r.url = server_.base_url() + path;
    r.headers = {{"Authorization", "Bearer SG.test-key"}, {"Content-Type", "application/json"}};
    r.body = R"({"personalizations":[{"to":[{"email":"a@example.com"}]}]})";
    r.timeout = kShortTimeout;
    return r;
  }

  FakeHttpServer server_;
  Client client_;
};

// A port on which nothing listens: bound once to get a free number, then closed.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST_F(HttpClientTest, AcceptedAnswerGivesHeadersAndTheRequestArrivesByteForByte) {
  Answer accepted;
  accepted.status = 202;
  accepted.headers = {{"X-Message-Id", "msg-123.filter"}, {"X-RateLimit-Remaining", "599"}};
  server_.script(kPath, {accepted});

  Request r = request(kPath + "?probe=1");
  // Every byte value, CR LF and NUL included, to prove the body is not a C string.
  r.body.clear();
  for (int i = 0; i < 256; ++i) r.body.push_back(static_cast<char>(i));
  r.body += "\r\n\r\n{\"ünïcode\":\"✓\"}";
  const Response response = client_.post(r);

  EXPECT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.status, 202);
  EXPECT_EQ(response.headers.at("x-message-id"), "msg-123.filter") << "names lower-cased";
  EXPECT_EQ(response.headers.at("x-ratelimit-remaining"), "599");
  EXPECT_TRUE(response.body.empty());
  EXPECT_TRUE(response.error.empty());
  EXPECT_EQ(classify(response), Verdict::kSuccess);
  EXPECT_EQ(response_code_label(response), "202");

  const auto received = server_.requests(kPath);
  ASSERT_EQ(received.size(), 1u) << "path matched without its query string";
  EXPECT_EQ(received[0].method, "POST");
  EXPECT_EQ(received[0].body, r.body);
  EXPECT_EQ(received[0].headers.at("authorization"), "Bearer SG.test-key");
  EXPECT_EQ(received[0].headers.at("content-type"), "application/json");
  EXPECT_EQ(received[0].headers.at("user-agent"), "crm-worker/" CRM_WORKER_VERSION);
  EXPECT_EQ(received[0].headers.count("expect"), 0u) << "no 100-continue round trip";
}

TEST_F(HttpClientTest, ThrottledAnswerCarriesItsRetryAfter) {
  Answer throttled;
  throttled.status = 429;
  throttled.headers = {{"Retry-After", "2"}};
  throttled.body = R"({"errors":[{"field":null,"message":"too many requests"}]})";
  server_.script(kPath, {throttled});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.body, throttled.body);
  EXPECT_EQ(classify(response), Verdict::kRetry);
  EXPECT_EQ(retry_after(response, now_timestamp()), Millis{2000});
}

TEST_F(HttpClientTest, ServerErrorIsRetryable) {
  Answer unavailable;
  unavailable.status = 503;
  unavailable.body = "upstream down";
  server_.script(kPath, {unavailable});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.body, "upstream down");
  EXPECT_EQ(classify(response), Verdict::kRetry);
  EXPECT_EQ(response_code_label(response), "503");
}

TEST_F(HttpClientTest, ScriptIsConsumedInOrderOnOneKeptAliveConnectionThenTheDefault) {
  Answer first, second, fallback;
  first.status = 503;
  second.status = 202;
  fallback.status = 200;
  fallback.body = "ok";
  server_.script(kPath, {first, second});
  server_.set_default(kPath, fallback);

  EXPECT_EQ(client_.post(request()).status, 503);
  EXPECT_EQ(client_.post(request()).status, 202);
  const Response third = client_.post(request());
  EXPECT_EQ(third.status, 200);
  EXPECT_EQ(third.body, "ok");
  EXPECT_EQ(client_.post(request("/unknown")).status, 404) << "unscripted path";
  EXPECT_EQ(server_.requests(kPath).size(), 3u);
  EXPECT_EQ(server_.requests().size(), 4u);
}

TEST_F(HttpClientTest, SlowAnswerBeyondTheTimeoutIsNoAnswer) {
  Answer slow;
  slow.status = 202;
  slow.delay = milliseconds{2000};
  server_.script(kPath, {slow});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kNoAnswer);
  EXPECT_TRUE(response.timed_out);
  EXPECT_EQ(response_code_label(response), "timeout");
  EXPECT_EQ(classify(response), Verdict::kRetry);
  EXPECT_GE(response.seconds, 0.25);
  EXPECT_LT(response.seconds, 1.5) << "the timeout bounds the call";
  EXPECT_EQ(server_.requests(kPath).size(), 1u) << "the server did get the request";
}

TEST_F(HttpClientTest, CloseWithoutAnswerIsNoAnswer) {
  Answer hang_up;
  hang_up.kind = Answer::Kind::kCloseWithoutAnswer;
  server_.script(kPath, {hang_up});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kNoAnswer);
  EXPECT_FALSE(response.timed_out);
  EXPECT_EQ(response_code_label(response), "error");
  EXPECT_FALSE(response.error.empty());
  EXPECT_EQ(server_.requests(kPath).size(), 1u);
}

// libcurl silently re-sends a request when a reused connection dies before
// any answer; for a mail send without an idempotency key that is a second
// email. The client refuses that resend: one post(), at most one request.
TEST_F(HttpClientTest, CloseWithoutAnswerOnAKeptAliveConnectionIsNotResent) {
  Answer ok, hang_up, after;
  hang_up.kind = Answer::Kind::kCloseWithoutAnswer;
  after.status = 201;
  server_.script(kPath, {ok, hang_up, after});

  ASSERT_EQ(client_.post(request()).status, 200);     // opens the connection
  const Response response = client_.post(request());  // reuses it; the server hangs up

  EXPECT_EQ(response.outcome, Outcome::kNoAnswer) << response.error;
  EXPECT_EQ(server_.requests(kPath).size(), 2u) << "the second post reached the server once";
  const Response next = client_.post(request());
  EXPECT_EQ(next.status, 201) << "the scripted answer was not eaten by a hidden resend";
  EXPECT_EQ(server_.requests(kPath).size(), 3u);
}

TEST_F(HttpClientTest, IdleConnectionClosedByTheServerIsReplacedTransparently) {
  // The server answers (framed, keep-alive) and then closes the idle
  // connection, as servers do after their idle timeout. The next post must
  // notice before sending and open a new connection: a success, not a failure.
  Answer answer_then_close;
  answer_then_close.kind = Answer::Kind::kGarbage;  // raw bytes: a valid answer, then close
  answer_then_close.body = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  Answer ok;
  server_.script(kPath, {answer_then_close, ok});

  const Response first = client_.post(request());
  ASSERT_EQ(first.outcome, Outcome::kAnswered) << first.error;
  ASSERT_EQ(first.body, "ok");
  std::this_thread::sleep_for(milliseconds{50});  // let the FIN arrive
  const Response second = client_.post(request());

  EXPECT_EQ(second.outcome, Outcome::kAnswered) << second.error;
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(server_.requests(kPath).size(), 2u);
}

TEST_F(HttpClientTest, HangIsNoAnswerAfterTheTimeout) {
  Answer hang;
  hang.kind = Answer::Kind::kHang;
  server_.script(kPath, {hang});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kNoAnswer);
  EXPECT_TRUE(response.timed_out);
  EXPECT_GE(response.seconds, 0.25);
  EXPECT_LT(response.seconds, 1.5);
  EXPECT_EQ(server_.requests(kPath).size(), 1u) << "recorded before the (absent) answer";
}

TEST_F(HttpClientTest, AnswerCutOffInItsBodyIsNoAnswerButKeepsTheStatus) {
  // A 202 whose declared body never arrives: the server accepted the mail,
  // which is what a sender without an idempotency key needs to know.
  Answer cut;
  cut.kind = Answer::Kind::kGarbage;
  cut.body = "HTTP/1.1 202 Accepted\r\nX-Message-Id: m-1\r\nContent-Length: 100\r\n\r\nshort";
  server_.script(kPath, {cut});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kNoAnswer);
  EXPECT_EQ(response.status, 202);
  EXPECT_EQ(response.headers.at("x-message-id"), "m-1");
  EXPECT_TRUE(response.body.empty()) << "a partial body is not handed out";
  EXPECT_EQ(response_code_label(response), "error");
}

TEST_F(HttpClientTest, GarbageIsBadAnswer) {
  Answer garbage;
  garbage.kind = Answer::Kind::kGarbage;
  garbage.body = "SSH-2.0-OpenSSH_9.2\r\nthis is not http\r\n\r\n";
  server_.script(kPath, {garbage});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kBadAnswer) << response.error;
  EXPECT_EQ(response.error, "answer is not HTTP");
  EXPECT_EQ(response.status, 0);
  EXPECT_EQ(classify(response), Verdict::kRetry);
}

TEST_F(HttpClientTest, DeclaredAnswerAboveTheCapIsBadAnswer) {
  Client small(ClientOptions{.max_response_bytes = 1000});
  Answer big;
  big.body = std::string(5000, 'x');
  server_.script(kPath, {big});

  const Response response = small.post(request());

  EXPECT_EQ(response.outcome, Outcome::kBadAnswer);
  EXPECT_NE(response.error.find("1000"), std::string::npos) << response.error;
  EXPECT_TRUE(response.body.empty());
}

TEST_F(HttpClientTest, UndeclaredAnswerAboveTheCapIsCutAndBadAnswer) {
  // No Content-Length, read until close: only counting the bytes stops it.
  Client small(ClientOptions{.max_response_bytes = 1000});
  Answer big;
  big.kind = Answer::Kind::kGarbage;
  big.body = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + std::string(1 << 20, 'x');
  server_.script(kPath, {big});

  const Response response = small.post(request());

  EXPECT_EQ(response.outcome, Outcome::kBadAnswer);
  EXPECT_TRUE(response.body.empty());
}

TEST_F(HttpClientTest, DefaultCapAcceptsAnAnswerJustBelowIt) {
  Answer large;
  large.body = std::string((1 << 20) - 1024, 'y');
  server_.script(kPath, {large});

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.body.size(), large.body.size());
}

TEST_F(HttpClientTest, RedirectIsReturnedNotFollowed) {
  Answer redirect;
  redirect.status = 302;
  redirect.headers = {{"Location", server_.base_url() + "/elsewhere"}};
  server_.script(kPath, {redirect});
  Answer elsewhere;
  elsewhere.status = 202;
  server_.set_default("/elsewhere", elsewhere);

  const Response response = client_.post(request());

  EXPECT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.status, 302);
  EXPECT_EQ(response.headers.at("location"), server_.base_url() + "/elsewhere");
  EXPECT_EQ(classify(response), Verdict::kGiveUp);
  EXPECT_EQ(server_.requests().size(), 1u) << "the Location was not fetched";
  EXPECT_TRUE(server_.requests("/elsewhere").empty());
}

// A Location naming another server (another port on this host, as an
// attacker's would) is returned, never followed, for every redirect status:
// 307 and 308 would even send the body, credentials and all, again.
TEST_F(HttpClientTest, RedirectToAnotherServerIsNotFollowed) {
  FakeHttpServer elsewhere;
  Answer landed;
  landed.status = 202;
  elsewhere.set_default("/landing", landed);
  const std::string location = elsewhere.base_url() + "/landing";
  for (int status : {301, 302, 303, 307, 308}) {
    Answer redirect;
    redirect.status = status;
    redirect.headers = {{"Location", location}};
    server_.script(kPath, {redirect});

    const Response response = client_.post(request());

    EXPECT_EQ(response.outcome, Outcome::kAnswered) << status << ": " << response.error;
    EXPECT_EQ(response.status, status);
    EXPECT_EQ(classify(response), Verdict::kGiveUp) << status;
  }
  EXPECT_EQ(server_.requests(kPath).size(), 5u);
  EXPECT_TRUE(elsewhere.requests().empty()) << "a redirect was followed to " << location;
}

// The same echoes, spelled otherwise: a 404 page quoting only the webhook's
// path, the URL JSON-escaped ("\/") or percent-encoded, the token alone.
TEST_F(HttpClientTest, EchoedCredentialsAreCutOutInEverySpelling) {
  const std::string token = "echo-canary-0a5c77d1e2";
  const std::string path = "/services/T1/B1/" + token;
  const std::string url = server_.base_url() + path;
  std::string json_escaped, percent;
  for (const char c : url) {
    if (c == '/') json_escaped += '\\';
    json_escaped += c;
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') {
      percent += c;
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02x", static_cast<unsigned char>(c));
      percent += hex;
    }
  }
  server_.set_handler(path, [&](const crm::test::Received&) {
    Answer a;
    a.status = 404;
    a.headers = {{"X-Path", path}};
    a.body = "no_service: " + path + " | " + json_escaped + " | redirect_uri=" + percent + " | token " + token;
    return a;
  });
  const Response response = client_.post(request(path));
  ASSERT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.body, "no_service: **** | **** | redirect_uri=**** | token ****");
  EXPECT_EQ(response.headers.at("x-path"), "****");
}

// An API that echoes the request back (a 401 page quoting the token, a
// gateway repeating the URL) must not hand the credentials to the caller,
// who may log the answer: they are cut out of the body and every header.
TEST_F(HttpClientTest, EchoedCredentialsAreCutOutOfTheAnswer) {
  const std::string key = "SG.echo-canary-4d1c";
  const std::string path = "/services/T1/B1/echo-canary-9e27";
  const std::string url = server_.base_url() + path;
  server_.set_handler(path, [&](const crm::test::Received& r) {
    const std::string auth = r.headers.count("authorization") ? r.headers.at("authorization") : "";
    Answer a;
    a.status = 401;
    a.headers = {{"X-Echo", auth},
                 {"WWW-Authenticate", "Bearer error=\"invalid_token\", key=\"" + key + "\""}};
    a.body = R"({"errors":[{"message":"bad )" + auth + " for " + url + R"(","field":")" + key +
             R"("}]})";
    return a;
  });
  Request r = request(path);
  r.headers = {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}};

  const Response response = client_.post(r);

  ASSERT_EQ(response.outcome, Outcome::kAnswered) << response.error;
  EXPECT_EQ(response.status, 401);
  EXPECT_EQ(classify(response), Verdict::kGiveUp);
  EXPECT_EQ(response.body, R"({"errors":[{"message":"bad **** for ****","field":"****"}]})");
  EXPECT_EQ(response.headers.at("x-echo"), "****");
  for (const auto& [name, value] : response.headers) {
    EXPECT_EQ(value.find("echo-canary"), std::string::npos) << name << ": " << value;
  }
  ASSERT_EQ(server_.requests(path).size(), 1u);
  EXPECT_EQ(server_.requests(path)[0].headers.at("authorization"), "Bearer " + key)
      << "sent as given";
}

TEST_F(HttpClientTest, ClosedPortIsNotSent) {
  Request r = request();
  r.url = "http://127.0.0.1:" + std::to_string(closed_port()) + kPath;

  const Response response = client_.post(r);

  EXPECT_EQ(response.outcome, Outcome::kNotSent);
  EXPECT_FALSE(response.error.empty());
  EXPECT_EQ(response_code_label(response), "error");
  EXPECT_EQ(classify(response), Verdict::kRetry);
}

TEST_F(HttpClientTest, TlsHandshakeFailureIsNotSent) {
  // https to a plain-HTTP server: the handshake fails before any request.
  Request r = request();
  r.url = "https://127.0.0.1:" + std::to_string(server_.port()) + kPath;

  const Response response = client_.post(r);

  EXPECT_EQ(response.outcome, Outcome::kNotSent) << response.error;
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(HttpClientTest, OnlyHttpAndHttpsAreSpoken) {
  for (const char* url : {"file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/x"}) {
    Request r = request();
    r.url = url;
    const Response response = client_.post(r);
    EXPECT_EQ(response.outcome, Outcome::kNotSent) << url;
    EXPECT_TRUE(response.body.empty()) << url;
  }
}

TEST_F(HttpClientTest, HeaderWithALineBreakIsRefusedBeforeSending) {
  Request r = request();
  r.headers.emplace_back("X-Injected", "a\r\nX-Evil: 1");

  const Response response = client_.post(r);

  EXPECT_EQ(response.outcome, Outcome::kNotSent);
  EXPECT_TRUE(server_.requests().empty());
}

// The canary stands for a Slack webhook token in the URL path and a SendGrid
// key in the Authorization header; no failure may echo either.
TEST_F(HttpClientTest, SecretsNeverAppearInErrorsOrOnStderr) {
  const std::string kCanary = "CANARY-b7e1d2c9";
  const std::string path = "/services/T0001/B0001/" + kCanary;
  auto secret_request = [&](const std::string& base) {
    Request r;
    r.url = base + path + "?token=" + kCanary;
    r.headers = {{"Authorization", "Bearer SG." + kCanary}, {"Content-Type", "application/json"}};
    r.body = "{}";
    r.timeout = kShortTimeout;
    return r;
  };
  Answer hang_up, hang, garbage, big;
  hang_up.kind = Answer::Kind::kCloseWithoutAnswer;
  hang.kind = Answer::Kind::kHang;
  garbage.kind = Answer::Kind::kGarbage;
  garbage.body = "not http at all\r\n\r\n";
  big.body = std::string(4096, 'z');
  server_.script(path, {hang_up, hang, garbage, big});

  Client small(ClientOptions{.max_response_bytes = 1000});
  const std::string plain = server_.base_url();
  const std::string closed = "http://127.0.0.1:" + std::to_string(closed_port());
  const std::string tls = "https://127.0.0.1:" + std::to_string(server_.port());
  struct Case {
    const char* name;
    std::string base;
    Outcome expected;
  };
  const Case cases[] = {
      {"closed port", closed, Outcome::kNotSent},
      {"close without answer", plain, Outcome::kNoAnswer},
      {"hang", plain, Outcome::kNoAnswer},
      {"garbage", plain, Outcome::kBadAnswer},
      {"too big", plain, Outcome::kBadAnswer},
      {"tls handshake", tls, Outcome::kNotSent},
      {"unresolvable host", "http://" + kCanary + ".invalid", Outcome::kNotSent},
      {"malformed url", "http://[" + kCanary, Outcome::kNotSent},
  };
  testing::internal::CaptureStderr();
  for (const Case& c : cases) {
    const Response response = small.post(secret_request(c.base));
    EXPECT_EQ(response.outcome, c.expected) << c.name << ": " << response.error;
    EXPECT_FALSE(response.error.empty()) << c.name;
    EXPECT_EQ(response.error.find(kCanary), std::string::npos) << c.name << ": " << response.error;
    EXPECT_EQ(response.error.find("127.0.0.1"), std::string::npos)
        << c.name << ": error text comes from the curl code only: " << response.error;
    EXPECT_EQ(response.body.find(kCanary), std::string::npos) << c.name;
  }
  const std::string stderr_text = testing::internal::GetCapturedStderr();
  EXPECT_EQ(stderr_text.find(kCanary), std::string::npos) << stderr_text;
  EXPECT_EQ(server_.requests(path).size(), 4u) << "the four plain-HTTP cases reached the fake";
}

// TLS peer verification is on: a server whose certificate no trusted CA
// signed (self-signed for "localhost", made here with openssl; the name
// matches) is refused in the handshake, before the request is sent.
TEST(HttpClientTls, UntrustedCertificateIsRefusedBeforeSending) {
  const std::string openssl = crm::test::find_program("openssl");
  ASSERT_FALSE(openssl.empty()) << "openssl is needed (scripts/install-deps.sh installs it)";
  crm::test::TempDir dir;
  crm::test::Process make_cert(
      {openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
       "-keyout", dir.file("key.pem"), "-out", dir.file("cert.pem")},
      {}, dir.file("req.log"));
  ASSERT_EQ(make_cert.wait(std::chrono::seconds(30)), 0) << make_cert.log();
  const int port = crm::test::free_port();
  crm::test::Process server({openssl, "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
                             "-cert", dir.file("cert.pem"), "-key", dir.file("key.pem"), "-www"},
                            {}, dir.file("s_server.log"));
  ASSERT_TRUE(crm::test::wait_until(
      [&] {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<uint16_t>(port));
        const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        return up;
      },
      std::chrono::seconds(10)))
      << server.log();

  Client client;
  Request r;
  r.url = "https://localhost:" + std::to_string(port) + kPath;
  r.headers = {{"Authorization", "Bearer SG.test-key"}, {"Content-Type", "application/json"}};
  r.body = "{}";
  r.timeout = milliseconds{5000};
  const Response response = client.post(r);

  EXPECT_EQ(response.outcome, Outcome::kNotSent) << response.error;
  EXPECT_EQ(response.error, curl_easy_strerror(CURLE_PEER_FAILED_VERIFICATION));
  EXPECT_EQ(classify(response), Verdict::kRetry);
  server.signal(SIGTERM);
}

}  // namespace
}  // namespace crm::http
