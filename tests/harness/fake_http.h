#pragma once
// A fake HTTP/1.1 server standing in for SendGrid, Slack and HubSpot in
// integration tests (TESTPLAN.md "Fake APIs"): a scripted queue of answers per
// path (status, headers, delay, close without answer, hang, garbage), handlers
// that compute answers for stateful fakes (FakeHubspot), and a ledger of every
// request received.
//
// Raw POSIX sockets rather than an HTTP library, because the failures under
// test (closing mid-exchange, never answering, answering non-HTTP) are exactly
// what libraries refuse to do. Bound to 127.0.0.1 on an ephemeral port, never
// another address. One thread accepts; each connection gets its own thread
// and is kept alive across requests, as libcurl reuses connections.
//
// Thread-safe: tests script and read the ledger from their own thread while
// the server threads answer.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace crm::test {

struct Answer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Waited after the request is read, before answering (cut short when the
  // server stops).
  std::chrono::milliseconds delay{0};
  enum class Kind {
    kNormal,
    kCloseWithoutAnswer,
    kHang,     // never answer until the server stops
    kGarbage,  // write `body` raw, not HTTP, then close
  } kind = Kind::kNormal;
};

struct Received {
  std::string method;
  std::string path;                            // without the query string
  std::string query;                           // after '?', without it; "" if none
  std::map<std::string, std::string> headers;  // names lower-cased; last value kept
  std::string body;
  std::chrono::system_clock::time_point at;  // when the body was fully read
};

class FakeHttpServer {
 public:
  // Computes the answer to one request. Runs on that connection's thread,
  // without the server's lock held, so it may block or call back into the
  // server (requests(), script()); it must be thread-safe itself, as
  // connections are served in parallel. Should not throw: an exception is
  // answered 500 with its what() in the body, so the test sees it.
  using Handler = std::function<Answer(const Received&)>;

  FakeHttpServer();   // listening when it returns
  ~FakeHttpServer();  // stops, releases hanging handlers, joins every thread
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  int port() const { return port_; }
  std::string base_url() const;  // "http://127.0.0.1:<port>"

  // How a request is answered, first match wins:
  //   1. the next scripted answer for its path (script()), consumed;
  //   2. the handler with the longest prefix of its path (set_handler());
  //   3. the path's default (set_default());
  //   4. 404.
  // So a test can put a 429, a 5xx, a hang or garbage in front of a stateful
  // handler, and the handler takes over once the script is used up.

  // Answers for `path`, consumed one per request in order.
  void script(const std::string& path, std::vector<Answer> answers);
  // The answer when nothing else matched (initially 404 for every path).
  void set_default(const std::string& path, Answer answer);
  // Handles every path starting with `path_prefix` ("" or "/" = all) that has
  // no scripted answer left. Replaces a handler set for the same prefix; an
  // empty `h` removes it.
  void set_handler(const std::string& path_prefix, Handler h);

  // The ledger, in arrival order: every request of `path` ("" = all paths).
  // A request is recorded once its body is read, before it is answered, so
  // hung and closed-without-answer requests are in it too.
  std::vector<Received> requests(const std::string& path = "") const;
  bool wait_for_requests(const std::string& path, std::size_t n,
                         std::chrono::milliseconds timeout) const;

 private:
  void accept_loop();
  void serve(int fd);
  Answer next_answer(const Received& request);
  std::size_t count_locked(const std::string& path) const;
  // Sleeps up to `d`; false if the server is stopping.
  bool wait_or_stop(std::optional<std::chrono::milliseconds> d);
  void close_connection(int fd);

  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe that wakes the accept loop on stop
  int port_ = 0;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;  // ledger grew, or stopping
  bool stopping_ = false;
  std::map<std::string, std::deque<Answer>> scripts_;
  std::map<std::string, Answer> defaults_;
  std::map<std::string, Handler> handlers_;  // by path prefix
  std::vector<Received> ledger_;
  std::set<int> open_fds_;  // so that stop can shut down connections blocked in recv
  std::vector<std::thread> connection_threads_;
  std::thread accept_thread_;
};

}  // namespace crm::test
