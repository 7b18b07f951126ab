// The dev broker is a working Kafka cluster for librdkafka clients (every
// produced message is consumed back by a consumer group) and its control
// commands really inject the faults they name. Everything runs in-process on
// loopback; every wait has a deadline so a broken broker fails the test
// instead of hanging it.

#include "queue/dev_broker.h"

#include <librdkafka/rdkafka.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace crm::queue {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kTopicA = "crm.test.a";
const std::string kTopicB = "crm.test.b";
constexpr int kBrokers = 3;
constexpr int kPartitions = 4;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(std::min<long long>(left, 100)) : 0;
}

rd_kafka_conf_t* make_conf(const std::map<std::string, std::string>& settings) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  for (const auto& [key, value] : settings) {
    if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
      ADD_FAILURE() << key << "=" << value << ": " << errstr;
    }
  }
  return conf;
}

// A producer that records the delivery result of every message it sent,
// indexed by the id passed to send().
class TestProducer {
 public:
  TestProducer(const std::string& bootstrap, std::map<std::string, std::string> extra = {}) {
    extra["bootstrap.servers"] = bootstrap;
    extra.emplace("linger.ms", "5");
    // After `up`, reconnect within half a second instead of the 10 s default.
    extra.emplace("reconnect.backoff.ms", "100");
    extra.emplace("reconnect.backoff.max.ms", "500");
    // `down` closes connections on purpose; one log line per broker is noise.
    extra.emplace("log.connection.close", "false");
    rd_kafka_conf_t* conf = make_conf(extra);
    rd_kafka_conf_set_dr_msg_cb(conf, &TestProducer::on_delivery);
    rd_kafka_conf_set_opaque(conf, this);
    char errstr[512];
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk_ == nullptr) {
      rd_kafka_conf_destroy(conf);
      ADD_FAILURE() << "rd_kafka_new: " << errstr;
    }
  }
  ~TestProducer() {
    if (rk_ == nullptr) return;
    // Do not wait for messages a broken broker will never acknowledge.
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk_, 2000);
    rd_kafka_destroy(rk_);
  }
  TestProducer(const TestProducer&) = delete;
  TestProducer& operator=(const TestProducer&) = delete;

  // Returns the id to wait for.
  int send(const std::string& topic, const std::string& key, const std::string& value) {
    const int id = next_id_++;
    const auto err = rd_kafka_producev(
        rk_, RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<intptr_t>(id))), RD_KAFKA_V_END);
    EXPECT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2name(err);
    return id;
  }

  // The delivery result of message `id`, or nullopt if none came by the
  // deadline.
  std::optional<rd_kafka_resp_err_t> wait_delivery(int id, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (results_.count(id) == 0 && Clock::now() < deadline) {
      rd_kafka_poll(rk_, remaining_ms(deadline));
    }
    if (auto it = results_.find(id); it != results_.end()) return it->second;
    return std::nullopt;
  }

  // True when all messages sent so far have a delivery result.
  bool wait_all(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (static_cast<int>(results_.size()) < next_id_ && Clock::now() < deadline) {
      rd_kafka_poll(rk_, remaining_ms(deadline));
    }
    return static_cast<int>(results_.size()) == next_id_;
  }

  const std::map<int, rd_kafka_resp_err_t>& results() const { return results_; }

 private:
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<TestProducer*>(opaque);
    self->results_[static_cast<int>(reinterpret_cast<intptr_t>(msg->_private))] = msg->err;
  }

  rd_kafka_t* rk_ = nullptr;
  int next_id_ = 0;
  std::map<int, rd_kafka_resp_err_t> results_;
};

// A balanced group consumer with the settings the mock needs to rebalance
// in seconds rather than minutes.
class TestConsumer {
 public:
  TestConsumer(const std::string& bootstrap, const std::string& group,
               const std::vector<std::string>& topics) {
    rd_kafka_conf_t* conf = make_conf({{"bootstrap.servers", bootstrap},
                                       {"group.id", group},
                                       {"auto.offset.reset", "earliest"},
                                       {"enable.auto.commit", "false"},
                                       {"fetch.wait.max.ms", "10"},
                                       {"session.timeout.ms", "6000"},
                                       {"heartbeat.interval.ms", "500"}});
    char errstr[512];
    rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk_ == nullptr) {
      rd_kafka_conf_destroy(conf);
      ADD_FAILURE() << "rd_kafka_new: " << errstr;
      return;
    }
    rd_kafka_poll_set_consumer(rk_);
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    for (const auto& t : topics) {
      rd_kafka_topic_partition_list_add(list, t.c_str(), RD_KAFKA_PARTITION_UA);
    }
    EXPECT_EQ(rd_kafka_subscribe(rk_, list), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(list);
  }

  ~TestConsumer() {
    if (rk_ == nullptr) return;
    // rd_kafka_consumer_close() has no timeout; close on a queue instead and
    // give up after a deadline.
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk_);
    if (rd_kafka_error_t* error = rd_kafka_consumer_close_queue(rk_, q)) {
      ADD_FAILURE() << "close: " << rd_kafka_error_string(error);
      rd_kafka_error_destroy(error);
    } else {
      const auto deadline = Clock::now() + seconds(10);
      while (!rd_kafka_consumer_closed(rk_) && Clock::now() < deadline) {
        if (rd_kafka_event_t* ev = rd_kafka_queue_poll(q, remaining_ms(deadline))) {
          rd_kafka_event_destroy(ev);
        }
      }
      EXPECT_TRUE(rd_kafka_consumer_closed(rk_)) << "consumer close missed its deadline";
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk_);
  }
  TestConsumer(const TestConsumer&) = delete;
  TestConsumer& operator=(const TestConsumer&) = delete;

  // Polls until `want` messages arrived or the deadline passed; returns the
  // values received (errors are recorded, not returned).
  std::vector<std::string> consume(size_t want, milliseconds timeout) {
    std::vector<std::string> values;
    const auto deadline = Clock::now() + timeout;
    while (values.size() < want && Clock::now() < deadline) {
      rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk_, remaining_ms(deadline));
      if (msg == nullptr) continue;
      if (msg->err) {
        errors_.push_back(msg->err);
      } else {
        values.emplace_back(static_cast<const char*>(msg->payload), msg->len);
      }
      rd_kafka_message_destroy(msg);
    }
    return values;
  }

  // Commits the consumed positions and waits for the result: a synchronous
  // commit that cannot hang.
  std::optional<rd_kafka_resp_err_t> commit(milliseconds timeout) {
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk_);
    std::optional<rd_kafka_resp_err_t> result;
    const auto err = rd_kafka_commit_queue(rk_, nullptr, q, nullptr, nullptr);
    if (err) {
      result = err;
    } else {
      const auto deadline = Clock::now() + timeout;
      while (!result && Clock::now() < deadline) {
        rd_kafka_event_t* ev = rd_kafka_queue_poll(q, remaining_ms(deadline));
        if (ev == nullptr) continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT) {
          result = rd_kafka_event_error(ev);
          // A request-level success can still carry per-partition failures.
          if (*result == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (const auto* parts = rd_kafka_event_topic_partition_list(ev)) {
              for (int i = 0; i < parts->cnt; ++i) {
                if (parts->elems[i].err) {
                  result = parts->elems[i].err;
                  break;
                }
              }
            }
          }
        }
        rd_kafka_event_destroy(ev);
      }
    }
    rd_kafka_queue_destroy(q);
    return result;
  }

  const std::vector<rd_kafka_resp_err_t>& errors() const { return errors_; }

 private:
  rd_kafka_t* rk_ = nullptr;
  std::vector<rd_kafka_resp_err_t> errors_;
};

// A line-oriented client of the control socket with 5 s send/receive
// timeouts.
class ControlClient {
 public:
  explicit ControlClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~ControlClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  bool connected() const { return connected_; }

  void send_raw(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }

  // The next answer line, or "<eof>" / "<timeout>".
  std::string read_line() {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      char chunk[1024];
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n == 0) return "<eof>";
      if (n < 0) return "<timeout>";
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

  std::string ask(const std::string& command) {
    send_raw(command + "\n");
    return read_line();
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string socket_path(const std::string& name) {
  // sun_path is 108 bytes: stay in /tmp rather than a deep build directory.
  return "/tmp/crm-dev-broker-test-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

class DevBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = DevBroker::start(kBrokers, kPartitions, {kTopicA, kTopicB});
    ASSERT_TRUE(started.is_ok()) << started.status().message();
    broker_ = std::move(started).value();
    ASSERT_FALSE(broker_->bootstrap_servers().empty());
  }

  std::unique_ptr<DevBroker> broker_;
};

TEST_F(DevBrokerTest, BootstrapServersAreLoopbackOnly) {
  const std::string& servers = broker_->bootstrap_servers();
  size_t count = 0;
  size_t start = 0;
  while (start <= servers.size()) {
    const size_t comma = std::min(servers.find(',', start), servers.size());
    const std::string one = servers.substr(start, comma - start);
    EXPECT_EQ(one.rfind("127.0.0.1:", 0), 0u) << one;
    ++count;
    start = comma + 1;
  }
  EXPECT_EQ(count, static_cast<size_t>(kBrokers));
}

TEST_F(DevBrokerTest, EveryProducedMessageIsConsumedByAGroup) {
  constexpr int kMessages = 100;
  std::set<std::string> sent;
  {
    TestProducer producer(broker_->bootstrap_servers());
    for (int i = 0; i < kMessages; ++i) {
      const std::string value = "message-" + std::to_string(i);
      producer.send(i % 2 == 0 ? kTopicA : kTopicB, "key-" + std::to_string(i), value);
      sent.insert(value);
    }
    ASSERT_TRUE(producer.wait_all(seconds(15)));
    for (const auto& [id, err] : producer.results()) {
      ASSERT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << "message " << id << ": " << rd_kafka_err2name(err);
    }
  }

  TestConsumer consumer(broker_->bootstrap_servers(), "dev-broker-test-all", {kTopicA, kTopicB});
  const auto values = consumer.consume(kMessages, seconds(30));
  const std::set<std::string> received(values.begin(), values.end());
  EXPECT_EQ(values.size(), static_cast<size_t>(kMessages)) << "duplicates or missing messages";
  EXPECT_EQ(received, sent);
  EXPECT_TRUE(consumer.errors().empty());
}

TEST_F(DevBrokerTest, ExecuteAnswersOkToValidCommands) {
  const std::vector<std::string> valid = {
      "rtt 1 0",
      "rtt -1 5",
      "rtt -1 0",
      "down 2",
      "up 2",
      "down -1",
      "up -1",
      "err Produce 2 REQUEST_TIMED_OUT",
      "err produce 1 rd_kafka_resp_err_not_leader_for_partition",
      "err OffsetCommit 2 NOT_COORDINATOR _TRANSPORT",
      "err 8 3 7 0 COORDINATOR_NOT_AVAILABLE",
      "clear Produce",
      "clear offsetcommit",
      "clear 8",
      "coordinator some-group 2",
      "leader " + kTopicA + " 0 3",
      "leader " + kTopicA + " 1 -1",
      "leader " + kTopicA + " 1 1",
      "create crm.test.new 2",
      "leader crm.test.new 1 2",
      "  DOWN   3  ",
      "up 3",
  };
  for (const auto& command : valid) EXPECT_EQ(broker_->execute(command), "ok") << command;
}

TEST_F(DevBrokerTest, ExecuteAnswersErrorToBadCommands) {
  const std::vector<std::string> bad = {
      "",
      "frobnicate 1",
      "down",
      "down 1 2",
      "down x",
      "down 0",
      "down 4",
      "up -2",
      "rtt 1",
      "rtt 1 -5",
      "rtt 1 10ms",
      "err Produce 2",
      "err Produce 0 REQUEST_TIMED_OUT",
      "err Produce x REQUEST_TIMED_OUT",
      "err Produce 3 REQUEST_TIMED_OUT NOT_COORDINATOR",
      "err NoSuchApi 1 REQUEST_TIMED_OUT",
      "err -1 1 REQUEST_TIMED_OUT",
      "err Produce 1 NO_SUCH_CODE",
      "err Produce 1 _TIMED_OUT",
      "err Produce 1 -185",
      "err Produce 1 99999",
      "clear",
      "clear Nope",
      "coordinator g",
      "coordinator g 7",
      "coordinator g -1",
      "leader no.such.topic 0 1",
      "leader " + kTopicA + " 0 9",
      "leader " + kTopicA + " 99 1",
      "leader " + kTopicA + " x 1",
      "create " + kTopicA + " 4",
      "create crm.test.zero 0",
      "create crm.test.x",
  };
  for (const auto& command : bad) {
    const std::string answer = broker_->execute(command);
    EXPECT_EQ(answer.rfind("error: ", 0), 0u) << "'" << command << "' -> " << answer;
  }
}

TEST_F(DevBrokerTest, ControlSocketServesSeveralClientsOneAnswerPerLine) {
  const std::string path = socket_path("serve");
  ASSERT_TRUE(broker_->serve_control_socket(path).is_ok());

  ControlClient first(path);
  ControlClient second(path);
  ASSERT_TRUE(first.connected());
  ASSERT_TRUE(second.connected());

  EXPECT_EQ(first.ask("down 1"), "ok");
  EXPECT_EQ(second.ask("up 1"), "ok");
  EXPECT_EQ(first.ask("err Produce 1 NOT_LEADER_FOR_PARTITION"), "ok");
  EXPECT_EQ(second.ask("clear Produce"), "ok");
  EXPECT_EQ(first.ask("bogus").rfind("error: unknown command", 0), 0u);
  EXPECT_EQ(second.ask("down").rfind("error: wrong number of arguments", 0), 0u);
  EXPECT_EQ(first.ask("rtt 1 abc").rfind("error: bad", 0), 0u);
  EXPECT_EQ(second.ask("err Nope 1 REQUEST_TIMED_OUT").rfind("error: unknown api", 0), 0u);
  EXPECT_EQ(first.ask("err Produce 1 NOPE").rfind("error: unknown error code", 0), 0u);

  // Pipelined commands in one write, CRLF endings, answered in order.
  first.send_raw("rtt 2 0\r\nnope\nup -1\n");
  EXPECT_EQ(first.read_line(), "ok");
  EXPECT_EQ(first.read_line().rfind("error: ", 0), 0u);
  EXPECT_EQ(first.read_line(), "ok");

  // A command split across writes is executed once it is complete.
  second.send_raw("coordi");
  second.send_raw("nator g 1\n");
  EXPECT_EQ(second.read_line(), "ok");

  // Destroying the broker ends the sessions and removes the socket file.
  broker_.reset();
  EXPECT_EQ(first.read_line(), "<eof>");
  struct stat st{};
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << path << " left behind";
}

TEST_F(DevBrokerTest, ControlSocketReplacesAStaleSocketButNeverARegularFile) {
  const std::string stale = socket_path("stale");
  {
    // What a SIGKILLed dev broker leaves: a socket file nobody listens on.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof(addr.sun_path) - 1);
    ::unlink(stale.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  ASSERT_TRUE(broker_->serve_control_socket(stale).is_ok());
  ControlClient client(stale);
  ASSERT_TRUE(client.connected());
  EXPECT_EQ(client.ask("rtt 1 0"), "ok");

  // A second broker must not take over a live socket...
  auto other = DevBroker::start(1, 1, {"crm.test.other"});
  ASSERT_TRUE(other.is_ok());
  EXPECT_FALSE((*other)->serve_control_socket(stale).is_ok());
  EXPECT_EQ(client.ask("rtt 1 0"), "ok");

  // ...nor delete a file that is not a socket.
  const std::string regular = socket_path("regular");
  std::ofstream(regular) << "important";
  EXPECT_FALSE((*other)->serve_control_socket(regular).is_ok());
  struct stat st{};
  EXPECT_EQ(::lstat(regular.c_str(), &st), 0);
  ::unlink(regular.c_str());
}

TEST_F(DevBrokerTest, DownAllFailsDeliveryAndUpAllRestoresIt) {
  TestProducer producer(broker_->bootstrap_servers(), {{"message.timeout.ms", "2000"}});
  // Warm up so the failure below is the broker's doing, not a cold start.
  const int warm = producer.send(kTopicA, "k", "warm-up");
  ASSERT_EQ(producer.wait_delivery(warm, seconds(10)), RD_KAFKA_RESP_ERR_NO_ERROR);

  ASSERT_EQ(broker_->execute("down -1"), "ok");
  const int lost = producer.send(kTopicA, "k", "while-down");
  const auto down_result = producer.wait_delivery(lost, seconds(10));
  ASSERT_TRUE(down_result.has_value()) << "no delivery report within 10 s";
  EXPECT_NE(*down_result, RD_KAFKA_RESP_ERR_NO_ERROR);

  ASSERT_EQ(broker_->execute("up -1"), "ok");
  // Reconnecting takes up to reconnect.backoff.max.ms, and a message sent
  // in that window may still time out: retry until one is delivered.
  const auto deadline = Clock::now() + seconds(15);
  std::optional<rd_kafka_resp_err_t> up_result;
  while (Clock::now() < deadline) {
    const int id = producer.send(kTopicA, "k", "after-up");
    up_result = producer.wait_delivery(id, seconds(5));
    if (up_result == RD_KAFKA_RESP_ERR_NO_ERROR) break;
  }
  EXPECT_EQ(up_result, RD_KAFKA_RESP_ERR_NO_ERROR);
}

TEST_F(DevBrokerTest, PushedProduceErrorFailsDeliveryAndClearForgetsIt) {
  TestProducer producer(broker_->bootstrap_servers(), {{"message.timeout.ms", "10000"}});
  const int warm = producer.send(kTopicA, "k", "warm-up");
  ASSERT_EQ(producer.wait_delivery(warm, seconds(10)), RD_KAFKA_RESP_ERR_NO_ERROR);

  // Not retriable for a producer: the message fails with exactly this code.
  // (Not TOPIC_AUTHORIZATION_FAILED: librdkafka then marks the whole topic
  // failed and refuses later produce() calls locally.)
  ASSERT_EQ(broker_->execute("err Produce 1 MSG_SIZE_TOO_LARGE"), "ok");
  const int failed = producer.send(kTopicA, "k", "refused");
  EXPECT_EQ(producer.wait_delivery(failed, seconds(10)), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);

  // Retriable: librdkafka retries and the message still gets through.
  ASSERT_EQ(broker_->execute("err Produce 2 NOT_LEADER_FOR_PARTITION"), "ok");
  const int retried = producer.send(kTopicA, "k", "retried");
  EXPECT_EQ(producer.wait_delivery(retried, seconds(10)), RD_KAFKA_RESP_ERR_NO_ERROR);

  ASSERT_EQ(broker_->execute("err Produce 5 MSG_SIZE_TOO_LARGE"), "ok");
  ASSERT_EQ(broker_->execute("clear Produce"), "ok");
  const int cleared = producer.send(kTopicA, "k", "after-clear");
  EXPECT_EQ(producer.wait_delivery(cleared, seconds(10)), RD_KAFKA_RESP_ERR_NO_ERROR);
}

TEST_F(DevBrokerTest, PushedOffsetCommitErrorFailsACommit) {
  {
    TestProducer producer(broker_->bootstrap_servers());
    for (int i = 0; i < 10; ++i) producer.send(kTopicA, std::to_string(i), "v" + std::to_string(i));
    ASSERT_TRUE(producer.wait_all(seconds(10)));
  }
  TestConsumer consumer(broker_->bootstrap_servers(), "dev-broker-test-commit", {kTopicA});
  ASSERT_FALSE(consumer.consume(1, seconds(20)).empty()) << "nothing consumed";

  ASSERT_EQ(broker_->execute("err OffsetCommit 1 OFFSET_METADATA_TOO_LARGE"), "ok");
  EXPECT_EQ(consumer.commit(seconds(10)), RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);

  // The pushed error was used up: the next commit goes through.
  consumer.consume(1, seconds(5));
  EXPECT_EQ(consumer.commit(seconds(10)), RD_KAFKA_RESP_ERR_NO_ERROR);
}

}  // namespace
}  // namespace crm::queue
