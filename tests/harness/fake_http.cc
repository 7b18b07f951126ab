#include "tests/harness/fake_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace crm::test {
namespace {

constexpr std::size_t kMaxHead = std::size_t{64} << 10;
constexpr std::size_t kMaxBody = std::size_t{64} << 20;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

[[noreturn]] void fail(const char* what) {
  throw std::runtime_error(std::string("FakeHttpServer: ") + what + ": " + std::strerror(errno));
}

// Reads more bytes into `buf`; false when the peer closed, the connection
// broke, or the server shut the socket down to stop.
bool read_more(int fd, std::string& buf) {
  char chunk[16 * 1024];
  while (true) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    // MSG_NOSIGNAL: a client that hung up must not SIGPIPE the test binary.
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

const char* reason_phrase(int status) {
  static constexpr std::pair<int, const char*> kPhrases[] = {
      {100, "Continue"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {413, "Content Too Large"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
  };
  for (const auto& [code, phrase] : kPhrases) {
    if (code == status) return phrase;
  }
  return "Status";  // the phrase is informative only; clients read the code
}

bool status_has_body(int status) { return !(status < 200 || status == 204 || status == 304); }

std::string render(const Answer& answer, bool head_request, bool close) {
  std::string out = "HTTP/1.1 ";
  out += std::to_string(answer.status);
  out += ' ';
  out += reason_phrase(answer.status);
  out += "\r\n";
  bool framed = false;  // the script chose its own framing (e.g. to lie about it)
  for (const auto& [name, value] : answer.headers) {
    out.append(name).append(": ").append(value).append("\r\n");
    const std::string n = lower(name);
    framed = framed || n == "content-length" || n == "transfer-encoding";
  }
  const bool body = status_has_body(answer.status);
  if (!framed && body) out += "Content-Length: " + std::to_string(answer.body.size()) + "\r\n";
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  if (body && !head_request) out += answer.body;
  return out;
}

// One parsed request head; `ok` false for anything that is not HTTP/1.x.
struct Head {
  bool ok = false;
  std::string method, target, version;
  std::map<std::string, std::string> headers;
};

Head parse_head(std::string_view text) {
  Head head;
  const auto eol = text.find("\r\n");
  const std::string_view line = text.substr(0, eol);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.find(' ', sp1 == std::string_view::npos ? 0 : sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos) return head;
  head.method = std::string(line.substr(0, sp1));
  head.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  head.version = std::string(line.substr(sp2 + 1));
  if (head.method.empty() || head.target.empty() || head.version.rfind("HTTP/1.", 0) != 0) {
    return head;
  }
  std::size_t pos = eol == std::string_view::npos ? text.size() : eol + 2;
  while (pos < text.size()) {
    auto next = text.find("\r\n", pos);
    if (next == std::string_view::npos) next = text.size();
    const std::string_view header = text.substr(pos, next - pos);
    pos = next + 2;
    if (header.empty()) continue;
    const auto colon = header.find(':');
    if (colon == std::string_view::npos || colon == 0) return head;
    head.headers[lower(header.substr(0, colon))] = std::string(trim(header.substr(colon + 1)));
  }
  head.ok = true;
  return head;
}

std::optional<std::size_t> parse_size(std::string_view s, int base) {
  if (s.empty() || s.size() > 16) return std::nullopt;
  std::size_t value = 0;
  for (char c : s) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    value = value * base + digit;
  }
  return value;
}

}  // namespace

FakeHttpServer::FakeHttpServer() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // ephemeral: tests run in parallel
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("bind");
  if (::listen(listen_fd_, 64) != 0) fail("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    fail("getsockname");
  }
  port_ = ntohs(addr.sin_port);
  if (::pipe2(wake_fds_, O_CLOEXEC) != 0) fail("pipe2");
  accept_thread_ = std::thread([this] { accept_loop(); });
}

FakeHttpServer::~FakeHttpServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // Wakes connection threads blocked in recv or send; each closes its own fd.
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  changed_.notify_all();  // releases delays and hangs
  const char byte = 0;
  (void)!::write(wake_fds_[1], &byte, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  // The accept thread is gone: nobody adds to connection_threads_ any more.
  for (auto& t : connection_threads_) t.join();
  ::close(listen_fd_);
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

std::string FakeHttpServer::base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

void FakeHttpServer::script(const std::string& path, std::vector<Answer> answers) {
  std::lock_guard lock(mutex_);
  auto& queue = scripts_[path];
  for (auto& a : answers) queue.push_back(std::move(a));
}

void FakeHttpServer::set_default(const std::string& path, Answer answer) {
  std::lock_guard lock(mutex_);
  defaults_[path] = std::move(answer);
}

void FakeHttpServer::set_handler(const std::string& path_prefix, Handler h) {
  std::lock_guard lock(mutex_);
  if (h) {
    handlers_[path_prefix] = std::move(h);
  } else {
    handlers_.erase(path_prefix);
  }
}

std::vector<Received> FakeHttpServer::requests(const std::string& path) const {
  std::lock_guard lock(mutex_);
  std::vector<Received> out;
  for (const auto& r : ledger_) {
    if (path.empty() || r.path == path) out.push_back(r);
  }
  return out;
}

std::size_t FakeHttpServer::count_locked(const std::string& path) const {
  if (path.empty()) return ledger_.size();
  return static_cast<std::size_t>(std::count_if(ledger_.begin(), ledger_.end(),
                                                [&](const Received& r) { return r.path == path; }));
}

bool FakeHttpServer::wait_for_requests(const std::string& path, std::size_t n,
                                       std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return count_locked(path) >= n; });
}

Answer FakeHttpServer::next_answer(const Received& request) {
  Handler handler;
  {
    std::lock_guard lock(mutex_);
    auto script = scripts_.find(request.path);
    if (script != scripts_.end() && !script->second.empty()) {
      Answer a = std::move(script->second.front());
      script->second.pop_front();
      return a;
    }
    std::size_t longest = 0;
    for (const auto& [prefix, h] : handlers_) {
      if (request.path.starts_with(prefix) && (!handler || prefix.size() > longest)) {
        handler = h;
        longest = prefix.size();
      }
    }
    if (!handler) {
      auto fallback = defaults_.find(request.path);
      if (fallback != defaults_.end()) return fallback->second;
      Answer not_found;
      not_found.status = 404;
      not_found.body = "no such path on the fake server";
      return not_found;
    }
  }
  // Called unlocked (a copy of the handler): a stateful fake takes its own
  // lock, and may read the ledger or script through this server.
  try {
    return handler(request);
  } catch (const std::exception& e) {
    Answer broken;
    broken.status = 500;
    broken.body = std::string("fake handler threw: ") + e.what();
    return broken;
  }
}

bool FakeHttpServer::wait_or_stop(std::optional<std::chrono::milliseconds> d) {
  std::unique_lock lock(mutex_);
  if (d) return !changed_.wait_for(lock, *d, [&] { return stopping_; });
  changed_.wait(lock, [&] { return stopping_; });
  return false;
}

void FakeHttpServer::close_connection(int fd) {
  {
    std::lock_guard lock(mutex_);
    open_fds_.erase(fd);
  }
  ::close(fd);
}

void FakeHttpServer::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN) != 0) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client gave up between poll and accept
    std::lock_guard lock(mutex_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    open_fds_.insert(fd);
    connection_threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void FakeHttpServer::serve(int fd) {
  std::string buf;
  auto refuse = [&](int status) {
    Answer a;
    a.status = status;
    (void)send_all(fd, render(a, false, true));
    close_connection(fd);
  };
  while (true) {
    // --- the head --------------------------------------------------------
    std::size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      // Not a request line (a TLS ClientHello starts with 0x16): say so at
      // once instead of waiting for a blank line that never comes.
      if (!buf.empty() && !(buf[0] >= 'A' && buf[0] <= 'Z')) return refuse(400);
      if (buf.size() > kMaxHead) return refuse(431);
      if (!read_more(fd, buf)) return close_connection(fd);
    }
    const Head head = parse_head(std::string_view(buf).substr(0, head_end + 2));
    if (!head.ok) return refuse(400);
    buf.erase(0, head_end + 4);

    auto header = [&](const char* name) -> std::string {
      auto it = head.headers.find(name);
      return it == head.headers.end() ? std::string() : it->second;
    };
    if (lower(header("expect")) == "100-continue") {
      if (!send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n")) return close_connection(fd);
    }

    // --- the body ----------------------------------------------------------
    std::string body;
    if (lower(header("transfer-encoding")).find("chunked") != std::string::npos) {
      while (true) {
        std::size_t eol;
        while ((eol = buf.find("\r\n")) == std::string::npos) {
          if (buf.size() > kMaxHead) return refuse(400);
          if (!read_more(fd, buf)) return close_connection(fd);
        }
        std::string_view size_text = std::string_view(buf).substr(0, eol);
        size_text = trim(size_text.substr(0, size_text.find(';')));  // chunk extensions
        const auto size = parse_size(size_text, 16);
        if (!size || body.size() + *size > kMaxBody) return refuse(400);
        buf.erase(0, eol + 2);
        if (*size == 0) {
          // Trailer fields, ignored, up to the blank line.
          while (true) {
            while ((eol = buf.find("\r\n")) == std::string::npos) {
              if (buf.size() > kMaxHead) return refuse(400);
              if (!read_more(fd, buf)) return close_connection(fd);
            }
            buf.erase(0, eol + 2);
            if (eol == 0) break;
          }
          break;
        }
        while (buf.size() < *size + 2) {
          if (!read_more(fd, buf)) return close_connection(fd);
        }
        if (buf.compare(*size, 2, "\r\n") != 0) return refuse(400);
        body.append(buf, 0, *size);
        buf.erase(0, *size + 2);
      }
    } else if (const std::string cl = header("content-length"); !cl.empty()) {
      const auto size = parse_size(cl, 10);
      if (!size || *size > kMaxBody) return refuse(400);
      while (buf.size() < *size) {
        if (!read_more(fd, buf)) return close_connection(fd);
      }
      body = buf.substr(0, *size);
      buf.erase(0, *size);
    }

    // --- the ledger, then the answer ------------------------------------------
    Received received;
    received.method = head.method;
    const auto question = head.target.find('?');
    received.path = head.target.substr(0, question);
    if (question != std::string::npos) received.query = head.target.substr(question + 1);
    received.headers = head.headers;
    received.body = std::move(body);
    received.at = std::chrono::system_clock::now();
    {
      std::lock_guard lock(mutex_);
      ledger_.push_back(received);  // a copy: a handler gets the request too
    }
    changed_.notify_all();

    const Answer answer = next_answer(received);
    if (answer.delay.count() > 0 && !wait_or_stop(answer.delay)) return close_connection(fd);
    switch (answer.kind) {
      case Answer::Kind::kCloseWithoutAnswer:
        return close_connection(fd);
      case Answer::Kind::kHang:
        (void)wait_or_stop(std::nullopt);
        return close_connection(fd);
      case Answer::Kind::kGarbage:
        (void)send_all(fd, answer.body);
        return close_connection(fd);
      case Answer::Kind::kNormal:
        break;
    }
    const bool close = lower(header("connection")) == "close" ||
                       (head.version == "HTTP/1.0" && lower(header("connection")) != "keep-alive");
    if (!send_all(fd, render(answer, head.method == "HEAD", close)) || close) {
      return close_connection(fd);
    }
  }
}

}  // namespace crm::test
