#include "queue/dev_broker.h"

// librdkafka's mock cluster (2.0.2). Facts the on-call engineer needs when a
// test against this broker behaves oddly:
//
//  * Data lives in memory only. Each partition keeps at most 5 MiB or 100,000
//    message sets (hard-coded in rdkafka_mock.c, no API to change it) and
//    silently drops the oldest beyond that: a consumer that falls behind gets
//    OFFSET_OUT_OF_RANGE and auto.offset.reset skips data. Keep the backlog
//    per partition under that (more partitions, compression, consume while
//    producing).
//  * `down B` drops connections and refuses new ones but does NOT move
//    partition leaders or group coordinators away from B; use `leader` and
//    `coordinator` for that.
//  * Pushed errors (`err`) are cluster-wide and consumed by the next requests
//    of that API from ANY client, including librdkafka's own retries.
//    _TRANSPORT is the only client-side code the mock understands: it closes
//    the connection instead of answering.
//  * Retriable codes are absorbed by librdkafka's internal retries: one
//    pushed REQUEST_TIMED_OUT, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or
//    _TRANSPORT on OffsetCommit (or NOT_LEADER_FOR_PARTITION on Produce)
//    only delays the call by ~retry.backoff.ms; the application sees success.
//    To make a commit or a delivery fail, push a non-retriable code (e.g.
//    OFFSET_METADATA_TOO_LARGE, MSG_SIZE_TOO_LARGE) or more retriable ones
//    than the client retries. TOPIC_AUTHORIZATION_FAILED on Produce makes
//    the client fail every later message of that topic locally.
//  * Client-side tuning the mock needs (fetch.wait.max.ms <= 10, linger.ms
//    >= 5, session.timeout.ms=6000, heartbeat.interval.ms=500) belongs in the
//    clients' configuration, not here.
//
// Most rd_kafka_mock_* control calls are requests to the mock's own thread
// that wait without a timeout (RD_POLL_INFINITE inside librdkafka). That
// thread only serves sockets and timers, so it answers within milliseconds;
// there is no API to bound it further. See MockOpPacer for the one known
// stall (up to 1 s) and how it is avoided.

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

namespace crm::queue {
namespace {

// Kafka protocol ApiKeys. librdkafka keeps its RD_KAFKAP_* constants in the
// internal rdkafka_protocol.h, so the subset a test is likely to break is
// listed here. Numbers are accepted too, for the APIs not named.
struct ApiKeyName {
  std::string_view name;
  int16_t key;
};
constexpr ApiKeyName kApiKeys[] = {
    {"Produce", 0},         {"Fetch", 1},          {"ListOffsets", 2},
    {"Metadata", 3},        {"OffsetCommit", 8},   {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},     {"Heartbeat", 12},
    {"LeaveGroup", 13},     {"SyncGroup", 14},     {"ApiVersion", 18},
};

// Bounds that keep a typo from allocating gigabytes or creating absurd
// topics; far above anything a test needs.
constexpr int kMaxBrokers = 64;
constexpr int kMaxPartitions = 10'000;
constexpr long kMaxErrorCount = 100'000;
constexpr long kMaxRttMs = 600'000;
// Control socket limits: a client that sends garbage or never reads its
// answers must not grow our memory without bound.
constexpr size_t kMaxLineBytes = 4096;
constexpr size_t kMaxPendingOutputBytes = 64 * 1024;
constexpr size_t kMaxControlClients = 64;
// The control thread is woken by the self-pipe; the timeout is only a safety
// net so that a lost wake-up still ends the thread within this delay.
constexpr int kControlPollTimeoutMs = 1000;

constexpr std::string_view kRespErrPrefix = "RD_KAFKA_RESP_ERR_";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::optional<long> parse_long(std::string_view s) {
  long v = 0;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || ptr != end || s.empty()) return std::nullopt;
  return v;
}

std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::istringstream in{std::string(line)};
  std::string word;
  while (in >> word) words.push_back(word);
  return words;
}

std::string error_answer(const std::string& why) { return "error: " + why; }

std::string mock_error_answer(const char* what, rd_kafka_resp_err_t err) {
  return error_answer(std::string(what) + " refused by the mock: " + rd_kafka_err2name(err) +
                      " (" + rd_kafka_err2str(err) + ")");
}

std::optional<int16_t> resolve_api_key(std::string_view word) {
  for (const auto& api : kApiKeys) {
    if (iequals(api.name, word)) return api.key;
  }
  if (auto n = parse_long(word); n && *n >= 0 && *n <= std::numeric_limits<int16_t>::max()) {
    return static_cast<int16_t>(*n);
  }
  return std::nullopt;
}

// Resolves "REQUEST_TIMED_OUT", "request_timed_out",
// "RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT", "_TRANSPORT" or "7".
// Client-side codes other than _TRANSPORT are refused: the mock would write
// them on the wire as if a broker had sent them, which no real broker does,
// so a test built on them would prove nothing.
std::variant<rd_kafka_resp_err_t, std::string> resolve_error_code(std::string_view word) {
  std::optional<int> code;
  if (auto n = parse_long(word)) {
    if (*n < std::numeric_limits<int16_t>::min() || *n > std::numeric_limits<int16_t>::max()) {
      return std::string("error code out of range: ") + std::string(word);
    }
    code = static_cast<int>(*n);
  } else {
    std::string_view name = word;
    if (name.size() > kRespErrPrefix.size() &&
        iequals(name.substr(0, kRespErrPrefix.size()), kRespErrPrefix)) {
      name.remove_prefix(kRespErrPrefix.size());
    }
    const rd_kafka_err_desc* descs = nullptr;
    size_t count = 0;
    rd_kafka_get_err_descs(&descs, &count);
    for (size_t i = 0; i < count; ++i) {
      if (descs[i].name != nullptr && iequals(descs[i].name, name)) {
        code = descs[i].code;
        break;
      }
    }
    if (!code) return std::string("unknown error code: ") + std::string(word);
  }
  if (*code < 0 && *code != RD_KAFKA_RESP_ERR__TRANSPORT) {
    return std::string("client-side code ") + std::string(word) +
           " cannot come from a broker (the only one the mock understands is _TRANSPORT)";
  }
  return static_cast<rd_kafka_resp_err_t>(*code);
}

// librdkafka 2.0.2 mock thread loop: poll(fds, timeout <= 1 s), serve the
// ops queue, THEN run the fd handlers, one of which drains the ops wake-up
// pipe. A control call issued right after the previous one was served
// writes its wake-up byte into that window; the byte is drained unserved and
// the call waits for the next 1 s poll timeout (measured: about one call in
// seven stalled exactly 1000 ms when issued back to back). Leaving a short
// gap after the previous call lets the mock thread finish draining first.
// Only calls that go through the ops queue need this; push/clear of request
// errors take a mutex instead.
class MockOpPacer {
 public:
  template <typename Call>
  rd_kafka_resp_err_t run(Call&& call) {
    const auto since = std::chrono::steady_clock::now() - last_;
    if (since < kGap) std::this_thread::sleep_for(kGap - since);
    const rd_kafka_resp_err_t err = call();
    last_ = std::chrono::steady_clock::now();
    return err;
  }

 private:
  static constexpr std::chrono::milliseconds kGap{5};
  std::chrono::steady_clock::time_point last_{};
};

// One connected control client: bytes read but not yet a full line, and
// answers not yet written.
struct ControlClient {
  int fd = -1;
  std::string in;
  std::string out;
  bool peer_done = false;  // EOF seen: flush `out`, then close
};

}  // namespace

struct DevBroker::Impl {
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_mock_cluster_t* mc_ = nullptr;
  int broker_count_ = 0;
  int replication_factor_ = 1;
  std::string bootstrap_servers_;

  // Serialises execute(): the owner's thread and the control thread may both
  // issue commands, and topics_ is plain state.
  std::mutex mu_;
  // Topics created through this object. `leader` is refused for any other
  // name because the mock would silently auto-create a topic for a typo.
  std::set<std::string> topics_;
  MockOpPacer pacer_;  // guarded by mu_ (and used by start() before sharing)

  // Control socket (all -1 / empty until serve_control_socket()).
  int listen_fd_ = -1;
  int wake_read_fd_ = -1;
  int wake_write_fd_ = -1;
  std::string socket_path_;
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread control_thread_;

  ~Impl() {
    stop_control_socket();
    // No timeout parameter. In 2.0.2 this takes ~1 s almost every time: the
    // mock thread joins its internal dummy broker thread, which notices the
    // terminate request only on its 1 s idle tick (seen with gdb). Bounded,
    // teardown-only, nothing to do about it from here.
    if (mc_ != nullptr) rd_kafka_mock_cluster_destroy(mc_);
    if (rk_ != nullptr) rd_kafka_destroy(rk_);
  }

  std::string execute(const std::string& command_line);
  std::string execute_err(const std::vector<std::string>& w);

  std::optional<std::string> check_broker(long b, bool allow_all) const {
    if ((allow_all && b == -1) || (b >= 1 && b <= broker_count_)) return std::nullopt;
    return "no broker " + std::to_string(b) + " (brokers are 1.." + std::to_string(broker_count_) +
           (allow_all ? ", -1 = all)" : ")");
  }

  Status start_control_socket(const std::string& path);
  void stop_control_socket();
  void control_loop();
  void serve_client_input(ControlClient& client);
};

namespace {

std::string arg_count_error(const std::string& cmd, const char* usage) {
  return error_answer("wrong number of arguments for " + cmd + ", usage: " + usage);
}

std::string bad_number(const std::string& what, const std::string& word) {
  return error_answer("bad " + what + ": " + word);
}

}  // namespace

std::string DevBroker::Impl::execute(const std::string& command_line) {
  const auto w = split_words(command_line);
  if (w.empty()) return error_answer("empty command");
  std::string cmd = w[0];
  std::transform(cmd.begin(), cmd.end(), cmd.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });

  std::lock_guard lock(mu_);

  if (cmd == "down" || cmd == "up") {
    if (w.size() != 2) return arg_count_error(cmd, "down|up BROKER");
    auto b = parse_long(w[1]);
    if (!b) return bad_number("broker id", w[1]);
    if (auto why = check_broker(*b, true)) return error_answer(*why);
    // -1 (all brokers) is handled by the mock itself in 2.0.2.
    const auto id = static_cast<int32_t>(*b);
    const auto err = pacer_.run([&] {
      return cmd == "down" ? rd_kafka_mock_broker_set_down(mc_, id)
                           : rd_kafka_mock_broker_set_up(mc_, id);
    });
    return err ? mock_error_answer(cmd.c_str(), err) : "ok";
  }

  if (cmd == "rtt") {
    if (w.size() != 3) return arg_count_error(cmd, "rtt BROKER MS");
    auto b = parse_long(w[1]);
    if (!b) return bad_number("broker id", w[1]);
    if (auto why = check_broker(*b, true)) return error_answer(*why);
    auto ms = parse_long(w[2]);
    if (!ms || *ms < 0 || *ms > kMaxRttMs) {
      return bad_number("milliseconds (0.." + std::to_string(kMaxRttMs) + ")", w[2]);
    }
    const auto err = pacer_.run([&] {
      return rd_kafka_mock_broker_set_rtt(mc_, static_cast<int32_t>(*b), static_cast<int>(*ms));
    });
    return err ? mock_error_answer("rtt", err) : "ok";
  }

  if (cmd == "err") return execute_err(w);

  if (cmd == "clear") {
    if (w.size() != 2) return arg_count_error(cmd, "clear API_KEY");
    auto api = resolve_api_key(w[1]);
    if (!api) return error_answer("unknown api: " + w[1]);
    rd_kafka_mock_clear_request_errors(mc_, *api);
    return "ok";
  }

  if (cmd == "coordinator") {
    if (w.size() != 3) return arg_count_error(cmd, "coordinator GROUP BROKER");
    auto b = parse_long(w[2]);
    if (!b) return bad_number("broker id", w[2]);
    // The mock accepts any id here, but a coordinator on a broker that does
    // not exist is almost always a typo; to lose the coordinator, pin it and
    // then take that broker `down`.
    if (auto why = check_broker(*b, false)) return error_answer(*why);
    const auto err = pacer_.run([&] {
      return rd_kafka_mock_coordinator_set(mc_, "group", w[1].c_str(), static_cast<int32_t>(*b));
    });
    return err ? mock_error_answer("coordinator", err) : "ok";
  }

  if (cmd == "leader") {
    if (w.size() != 4) return arg_count_error(cmd, "leader TOPIC PARTITION BROKER");
    if (topics_.count(w[1]) == 0) {
      return error_answer("unknown topic " + w[1] + " (only topics created by the dev broker)");
    }
    auto p = parse_long(w[2]);
    if (!p || *p < 0 || *p > kMaxPartitions) return bad_number("partition", w[2]);
    auto b = parse_long(w[3]);
    if (!b) return bad_number("broker id", w[3]);
    // -1 here means "no leader", which the mock supports directly.
    if (auto why = check_broker(*b, true)) return error_answer(*why);
    const auto err = pacer_.run([&] {
      return rd_kafka_mock_partition_set_leader(mc_, w[1].c_str(), static_cast<int32_t>(*p),
                                                static_cast<int32_t>(*b));
    });
    return err ? mock_error_answer("leader", err) : "ok";
  }

  if (cmd == "create") {
    if (w.size() != 3) return arg_count_error(cmd, "create TOPIC PARTITIONS");
    auto n = parse_long(w[2]);
    if (!n || *n < 1 || *n > kMaxPartitions) {
      return bad_number("partition count (1.." + std::to_string(kMaxPartitions) + ")", w[2]);
    }
    const auto err = pacer_.run([&] {
      return rd_kafka_mock_topic_create(mc_, w[1].c_str(), static_cast<int>(*n),
                                        replication_factor_);
    });
    if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      // It exists (maybe auto-created by a client), so `leader` may use it.
      topics_.insert(w[1]);
      return error_answer("topic " + w[1] + " already exists");
    }
    if (err) return mock_error_answer("create", err);
    topics_.insert(w[1]);
    return "ok";
  }

  return error_answer("unknown command: " + w[0] +
                      " (down, up, rtt, err, clear, coordinator, leader, create)");
}

std::string DevBroker::Impl::execute_err(const std::vector<std::string>& w) {
  if (w.size() < 4) return arg_count_error("err", "err API_KEY COUNT CODE...");
  auto api = resolve_api_key(w[1]);
  if (!api) return error_answer("unknown api: " + w[1]);
  auto count = parse_long(w[2]);
  if (!count || *count < 1 || *count > kMaxErrorCount) {
    return bad_number("count (1.." + std::to_string(kMaxErrorCount) + ")", w[2]);
  }
  const size_t n_codes = w.size() - 3;
  if (n_codes != 1 && n_codes != static_cast<size_t>(*count)) {
    return error_answer("got " + std::to_string(n_codes) + " codes for count " + w[2] +
                        " (give one code to repeat, or exactly COUNT codes)");
  }
  std::vector<rd_kafka_resp_err_t> codes;
  codes.reserve(static_cast<size_t>(*count));
  for (size_t i = 3; i < w.size(); ++i) {
    auto code = resolve_error_code(w[i]);
    if (auto* why = std::get_if<std::string>(&code)) return error_answer(*why);
    codes.push_back(std::get<rd_kafka_resp_err_t>(code));
  }
  if (n_codes == 1) codes.resize(static_cast<size_t>(*count), codes.front());
  rd_kafka_mock_push_request_errors_array(mc_, *api, codes.size(), codes.data());
  return "ok";
}

// --- control socket ----------------------------------------------------------

Status DevBroker::Impl::start_control_socket(const std::string& path) {
  if (listen_fd_ >= 0) {
    return Status::permanent("control_socket", "already serving on " + socket_path_);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::permanent("control_socket", "control socket path must be 1.." +
                                                   std::to_string(sizeof(addr.sun_path) - 1) +
                                                   " bytes: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  // A previous dev broker killed with SIGKILL leaves its socket file behind.
  // Remove it only if it is a socket nobody listens on: never delete a
  // regular file given by mistake, never steal a live broker's socket.
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::permanent("control_socket", path + " exists and is not a socket");
    }
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) return Status::fatal("control_socket", std::string("socket: ") + strerror(errno));
    // Non-blocking: a unix connect either succeeds, is refused, or (full
    // backlog) returns EAGAIN at once; it never waits.
    const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int connect_errno = errno;
    ::close(probe);
    if (rc == 0 || connect_errno == EAGAIN) {
      return Status::permanent("control_socket", path + " is in use by a running process");
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::fatal("control_socket",
                           "cannot remove stale " + path + ": " + strerror(errno));
    }
  }

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::fatal("control_socket", std::string("socket: ") + strerror(errno));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 16) != 0) {
    const std::string why = strerror(errno);
    ::close(fd);
    return Status::fatal("control_socket", "cannot listen on " + path + ": " + why);
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    const std::string why = strerror(errno);
    ::close(fd);
    ::unlink(path.c_str());
    return Status::fatal("control_socket", "pipe: " + why);
  }
  if (::stat(path.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  listen_fd_ = fd;
  wake_read_fd_ = pipe_fds[0];
  wake_write_fd_ = pipe_fds[1];
  socket_path_ = path;
  stopping_ = false;
  control_thread_ = std::thread([this] { control_loop(); });
  return Status::ok();
}

void DevBroker::Impl::stop_control_socket() {
  if (!control_thread_.joinable()) return;
  stopping_ = true;
  const char byte = 'x';
  // Non-blocking; if the pipe is somehow full the thread is already awake.
  [[maybe_unused]] auto n = ::write(wake_write_fd_, &byte, 1);
  control_thread_.join();
  ::close(listen_fd_);
  ::close(wake_read_fd_);
  ::close(wake_write_fd_);
  listen_fd_ = wake_read_fd_ = wake_write_fd_ = -1;
  // Remove the socket file only if it is still ours (someone may have
  // replaced it after a manual cleanup).
  struct stat st{};
  if (::lstat(socket_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(socket_path_.c_str());
  }
}

void DevBroker::Impl::serve_client_input(ControlClient& client) {
  size_t start = 0;
  for (;;) {
    const size_t nl = client.in.find('\n', start);
    if (nl == std::string::npos) break;
    std::string line = client.in.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    client.out += execute(line);
    client.out += '\n';
    start = nl + 1;
  }
  client.in.erase(0, start);
  if (client.in.size() > kMaxLineBytes) {
    client.out += error_answer("line longer than " + std::to_string(kMaxLineBytes) + " bytes") + "\n";
    client.in.clear();
    client.peer_done = true;  // answer, then hang up: we lost the framing
  } else if (client.peer_done && !client.in.empty()) {
    // `printf 'down 1' | nc -U sock`: a last command without a newline.
    client.out += execute(client.in) + "\n";
    client.in.clear();
  }
}

void DevBroker::Impl::control_loop() {
  std::vector<ControlClient> clients;
  std::vector<pollfd> fds;
  while (!stopping_) {
    fds.clear();
    fds.push_back({wake_read_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : clients) {
      short events = 0;
      // Stop reading from a client that does not read its answers.
      if (!c.peer_done && c.out.size() < kMaxPendingOutputBytes) events |= POLLIN;
      if (!c.out.empty()) events |= POLLOUT;
      fds.push_back({c.fd, events, 0});
    }
    const int ready = ::poll(fds.data(), fds.size(), kControlPollTimeoutMs);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;  // unrecoverable (EFAULT/ENOMEM); the socket simply stops answering
    }
    if (stopping_) break;
    if (ready == 0) continue;

    for (size_t i = 0; i < clients.size(); ++i) {
      auto& c = clients[i];
      const short revents = fds[i + 2].revents;
      if (revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[4096];
        const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
        if (n > 0) {
          c.in.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          c.peer_done = true;
        }
        serve_client_input(c);
      }
      if (!c.out.empty()) {
        const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          c.out.erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          c.out.clear();  // peer gone: nothing more to deliver
          c.peer_done = true;
        }
      }
    }
    std::erase_if(clients, [](const ControlClient& c) {
      if (c.peer_done && c.out.empty()) {
        ::close(c.fd);
        return true;
      }
      return false;
    });

    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;  // EAGAIN: no more pending; other errors: retry next round
        if (clients.size() >= kMaxControlClients) {
          static constexpr std::string_view kBusy = "error: too many control clients\n";
          [[maybe_unused]] auto n = ::send(fd, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          ::close(fd);
          continue;
        }
        clients.push_back(ControlClient{fd, {}, {}, false});
      }
    }
  }
  for (const auto& c : clients) ::close(c.fd);
}

// --- DevBroker ---------------------------------------------------------------

DevBroker::DevBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DevBroker::~DevBroker() = default;

Result<std::unique_ptr<DevBroker>> DevBroker::start(int brokers, int partitions,
                                                    const std::vector<std::string>& topics) {
  if (brokers < 1 || brokers > kMaxBrokers) {
    return Status::permanent("invalid_argument", "dev broker count must be 1.." +
                                                     std::to_string(kMaxBrokers) + ", got " +
                                                     std::to_string(brokers));
  }
  if (partitions < 1 || partitions > kMaxPartitions) {
    return Status::permanent("invalid_argument", "dev broker partitions must be 1.." +
                                                     std::to_string(kMaxPartitions) + ", got " +
                                                     std::to_string(partitions));
  }
  for (const auto& t : topics) {
    if (t.empty()) return Status::permanent("invalid_argument", "empty topic name");
  }

  auto impl = std::make_unique<Impl>();
  impl->broker_count_ = brokers;
  impl->replication_factor_ = std::min(3, brokers);

  // The mock cluster needs a client handle for its bookkeeping only; this
  // producer never connects anywhere. log_level 4 hides its harmless
  // "No bootstrap.servers configured" notice while keeping warnings and
  // errors from the mock itself (which logs through this handle).
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "client.id", "crm-dev-broker", errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return Status::fatal("dev_broker_start", std::string("librdkafka config: ") + errstr);
  }
  impl->rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (impl->rk_ == nullptr) {
    rd_kafka_conf_destroy(conf);  // not taken over on failure
    return Status::fatal("dev_broker_start", std::string("rd_kafka_new: ") + errstr);
  }
  impl->mc_ = rd_kafka_mock_cluster_new(impl->rk_, brokers);
  if (impl->mc_ == nullptr) {
    return Status::fatal("dev_broker_start",
                         "rd_kafka_mock_cluster_new failed (cannot listen on 127.0.0.1?)");
  }
  impl->bootstrap_servers_ = rd_kafka_mock_cluster_bootstraps(impl->mc_);

  for (const auto& t : topics) {
    const auto err = impl->pacer_.run([&] {
      return rd_kafka_mock_topic_create(impl->mc_, t.c_str(), partitions,
                                        impl->replication_factor_);
    });
    // A duplicate in the configured list is harmless.
    if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      return Status::fatal("dev_broker_start", "cannot create topic " + t + ": " +
                                                   rd_kafka_err2str(err));
    }
    impl->topics_.insert(t);
  }
  return std::unique_ptr<DevBroker>(new DevBroker(std::move(impl)));
}

const std::string& DevBroker::bootstrap_servers() const { return impl_->bootstrap_servers_; }

std::string DevBroker::execute(const std::string& command_line) {
  return impl_->execute(command_line);
}

Status DevBroker::serve_control_socket(const std::string& path) {
  return impl_->start_control_socket(path);
}

}  // namespace crm::queue
