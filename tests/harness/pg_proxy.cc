#include "tests/harness/pg_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace crm::test {
namespace {

// The protocol's startup-phase request codes that are not the startup
// message itself (the server answers them with one byte).
constexpr std::uint32_t kSslRequest = 80877103;
constexpr std::uint32_t kGssEncRequest = 80877104;

std::uint32_t be32(const char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return ntohl(v);
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool is_commit(const std::string& query) {
  std::string q;
  for (char c : query) {
    if (c == '\0' || c == ';') break;
    if (!std::isspace(static_cast<unsigned char>(c))) q += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return q == "COMMIT" || q == "END";
}

}  // namespace

PgCommitProxy::PgCommitProxy(int server_port) : server_port_(server_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 64) != 0) {
    throw std::runtime_error("proxy: cannot listen on 127.0.0.1");
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

PgCommitProxy::~PgCommitProxy() {
  stop_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  close(listen_fd_);
  std::lock_guard lock(mu_);
  for (std::thread& t : connections_) t.join();
}

void PgCommitProxy::cut_commits(int every, int times) {
  std::lock_guard lock(mu_);
  every_ = std::max(1, every);
  remaining_ = times;
}

bool PgCommitProxy::take_commit() {
  const int n = ++commits_;
  std::lock_guard lock(mu_);
  if (remaining_ <= 0 || n % every_ != 0) return false;
  --remaining_;
  ++cut_;
  return true;
}

void PgCommitProxy::accept_loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    std::lock_guard lock(mu_);
    connections_.emplace_back([this, client] { serve(client); });
  }
}

void PgCommitProxy::serve(int client) {
  int server = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(server_port_));
  if (connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(server);
    close(client);
    return;
  }
  std::string pending;    // client bytes not yet framed into whole messages
  bool startup = true;    // before the startup message: no type bytes
  bool in_doubt = false;  // a COMMIT to cut went to the server
  char buf[65536];
  while (!stop_) {
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    if (poll(fds, 2, 200) <= 0) continue;
    if (fds[1].revents != 0) {
      ssize_t n = recv(server, buf, sizeof buf, 0);
      // The server answered the COMMIT: it is done there. The client never
      // hears of it.
      if (n <= 0 || in_doubt) break;
      if (!write_all(client, buf, static_cast<size_t>(n))) break;
    }
    if (fds[0].revents != 0) {
      ssize_t n = recv(client, buf, sizeof buf, 0);
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      // Forward whole messages only, looking at each.
      size_t used = 0;
      bool ok = true;
      while (ok) {
        const size_t header = startup ? 4 : 5;
        if (pending.size() - used < header) break;
        const std::uint32_t length = be32(pending.data() + used + (startup ? 0 : 1));
        const size_t total = (startup ? 0 : 1) + length;
        if (pending.size() - used < total) break;
        if (startup) {
          const std::uint32_t code = length >= 8 ? be32(pending.data() + used + 4) : 0;
          if (code != kSslRequest && code != kGssEncRequest) startup = false;
        } else if (pending[used] == 'Q' && is_commit(pending.substr(used + 5, total - 5)) && take_commit()) {
          in_doubt = true;
        }
        ok = write_all(server, pending.data() + used, total);
        used += total;
      }
      pending.erase(0, used);
      if (!ok) break;
    }
  }
  close(server);
  close(client);
}

}  // namespace crm::test
