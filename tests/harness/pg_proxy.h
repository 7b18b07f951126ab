#pragma once
// A TCP proxy in front of PostgreSQL that makes commits end in doubt: it
// forwards everything, and for the commits it is told to, it lets the
// client's COMMIT reach the server, waits for the server's answer (the
// commit is done by then), and cuts both connections instead of passing
// the answer on. The client is left not knowing whether its transaction
// committed, which is what a network failure at that moment does.
//
// Loopback only. The client must not use TLS (sslmode=disable): the proxy
// reads the protocol's message framing.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace crm::test {

class PgCommitProxy {
 public:
  // Forwards 127.0.0.1:port() to 127.0.0.1:server_port.
  explicit PgCommitProxy(int server_port);
  ~PgCommitProxy();
  int port() const { return port_; }
  // Every `every`-th COMMIT from now on ends in doubt, `times` times.
  void cut_commits(int every, int times);
  // COMMITs seen so far, and how many of them were cut.
  int commits() const { return commits_; }
  int cut() const { return cut_; }

 private:
  struct Pipe;
  void accept_loop();
  void serve(int client);
  // True if this COMMIT is to end in doubt.
  bool take_commit();

  int server_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> connections_;
  std::atomic<int> commits_{0};
  std::atomic<int> cut_{0};
  int every_ = 0;
  int remaining_ = 0;
};

}  // namespace crm::test
