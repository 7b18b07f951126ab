#include "tests/harness/harness.h"

#include "db/migrations.h"
#include "tests/harness/source_tree.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace crm::test {

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(50ms);
  }
}

std::string worker_binary() { return CRM_WORKER_BINARY; }

namespace {

std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<unsigned long long> d;
  std::ostringstream s;
  s << std::hex << d(rng);
  return s.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TempDir::TempDir() {
  std::string base = std::string(CRM_TEST_STATE_DIR) + "/tmp";
  std::filesystem::create_directories(base);
  std::string tmpl = base + "/t-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestDatabase::TestDatabase(const DatabaseOptions& options) {
  std::string dir = options.pg_dir;
  if (dir.empty()) {
    const char* env = std::getenv("CRM_TEST_PG_DIR");
    if (env == nullptr) throw std::runtime_error("CRM_TEST_PG_DIR is not set: run through ctest");
    dir = env;
  }
  admin_conninfo_ = trim(read_file(dir + "/conninfo"));
  if (admin_conninfo_.empty()) throw std::runtime_error("no conninfo in " + dir);
  name_ = "t_" + random_suffix();
  {
    pqxx::connection admin(admin_conninfo_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(name_));
  }
  // Replace dbname=... in the keyword conninfo.
  auto with_user = [&](const std::string& user) {
    std::string ci;
    std::istringstream words(admin_conninfo_);
    for (std::string w; words >> w;) {
      if (w.rfind("dbname=", 0) == 0 || (!user.empty() && w.rfind("user=", 0) == 0)) continue;
      ci += w + " ";
    }
    return ci + (user.empty() ? "" : "user=" + user + " ") + "dbname=" + name_;
  };
  conninfo_ = with_user("");
  // URL form for the worker: the same keywords as query parameters.
  std::string host, port, user;
  std::istringstream words(admin_conninfo_);
  for (std::string w; words >> w;) {
    if (w.rfind("host=", 0) == 0) host = w.substr(5);
    if (w.rfind("port=", 0) == 0) port = w.substr(5);
    if (w.rfind("user=", 0) == 0) user = w.substr(5);
  }
  std::string migrator_conninfo = conninfo_;
  if (options.roles) {
    const std::string migrator = "m_" + name_;
    const std::string runtime = "r_" + name_;
    roles_ = {runtime, migrator};
    const std::string roles_sql = (source_root() / "deploy" / "sql" / "roles.sql").string();
    TempDir out;
    Process psql({"/usr/bin/psql", "-X", "-q", conninfo_, "-v", "migrator=" + migrator, "-v",
                  "runtime=" + runtime, "-f", roles_sql},
                 {}, out.file("psql.log"));
    if (psql.wait(60s) != 0) throw std::runtime_error("roles.sql failed: " + psql.log());
    migrator_conninfo = with_user(migrator);
    user = runtime;
  }
  user_ = user;
  url_ = "postgresql://" + user + "@/" + name_ + "?host=" + host + "&port=" + port;
  // The schema is there before the test looks (crm-worker run applies it
  // too, as a no-op then; the migrations have their own test).
  pqxx::connection c(migrator_conninfo);
  auto report = crm::db::apply_migrations(c, crm::db::embedded_migrations());
  if (!report) throw std::runtime_error("migrations failed: " + report.status().message());
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection admin(admin_conninfo_);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
    for (const std::string& role : roles_) tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(role));
  } catch (...) {
  }
}

void TestDatabase::set_available(bool available) const {
  pqxx::connection admin(admin_conninfo_);
  pqxx::nontransaction tx(admin);
  tx.exec("ALTER DATABASE " + tx.quote_name(name_) + " ALLOW_CONNECTIONS " + (available ? "true" : "false"));
  if (!available) {
    tx.exec_params("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name_);
  }
}

std::string TestDatabase::tcp_url(int port) const {
  return "postgresql://" + user_ + "@127.0.0.1:" + std::to_string(port) + "/" + name_ + "?sslmode=disable";
}

std::unique_ptr<pqxx::connection> TestDatabase::connect() const {
  return std::make_unique<pqxx::connection>(conninfo_);
}

std::string TestDatabase::scalar(const std::string& sql) const {
  auto c = connect();
  pqxx::nontransaction tx(*c);
  pqxx::result r = tx.exec(sql);
  if (r.empty() || r[0][0].is_null()) return "";
  return r[0][0].as<std::string>();
}

long long TestDatabase::count(const std::string& sql) const {
  std::string v = scalar(sql);
  return v.empty() ? 0 : std::stoll(v);
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env,
                 const std::string& log_path)
    : log_path_(log_path) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 2);
      dup2(fd, 1);
      close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    // Start with clean signal state: the test runner may block some.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (running()) {
    kill(pid_, SIGKILL);
    wait(5s);
  }
}

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return r == 0;
}

void Process::signal(int sig) {
  if (running()) kill(pid_, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  wait_until([&] { return !running(); }, timeout);
  return status_;
}

std::string Process::log() const { return read_file(log_path_); }

DevBrokerProcess::DevBrokerProcess(int brokers, int partitions) {
  std::string port_file = dir_.file("bootstrap");
  process_ = std::make_unique<Process>(
      std::vector<std::string>{worker_binary(), "dev-broker", "--brokers", std::to_string(brokers),
                               "--partitions", std::to_string(partitions), "--port-file",
                               port_file, "--control", dir_.file("control.sock")},
      std::map<std::string, std::string>{{"CRM_WORKER_LOG_FORMAT", "text"}},
      dir_.file("broker.log"));
  if (!wait_until([&] { return std::filesystem::exists(port_file); }, 20s)) {
    throw std::runtime_error("dev broker did not start: " + process_->log());
  }
  bootstrap_ = trim(read_file(port_file));
}

std::string DevBrokerProcess::control(const std::string& command) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = dir_.file("control.sock");
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "error: cannot connect";
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line = command + "\n";
  (void)!::write(fd, line.data(), line.size());
  std::string answer;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') answer.push_back(c);
  close(fd);
  return answer;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

WorkerProcess::WorkerProcess(const TestDatabase& db, const std::string& bootstrap,
                             std::map<std::string, std::string> extra_env,
                             const std::string& config_toml) {
  http_port_ = free_port();
  std::map<std::string, std::string> env = {
      {"CRM_WORKER_DATABASE_URL", db.url()},
      {"CRM_WORKER_KAFKA_BROKERS", bootstrap},
      {"CRM_WORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(http_port_)},
      {"CRM_WORKER_LOG_FORMAT", "text"},
  };
  for (auto& [k, v] : extra_env) env[k] = v;
  std::string config = dir_.file("crm-worker.toml");
  // Short group timeouts and fast fetches against the mock (REFERENCE §5.6),
  // unless the test's own configuration (which goes on in the same table)
  // sets one of them.
  std::ofstream out(config);
  out << "[kafka.properties]\n";
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"session.timeout.ms", "6000"},
           {"heartbeat.interval.ms", "500"},
           {"max.poll.interval.ms", "15000"},
           {"fetch.wait.max.ms", "10"},
           {"statistics.interval.ms", "1000"},
           {"auto.commit.interval.ms", "200"}}) {
    const std::string key = "\"" + name + "\" =";
    if (config_toml.find(key) == std::string::npos) out << key << " \"" << value << "\"\n";
  }
  out << config_toml;
  out.close();
  process_ = std::make_unique<Process>(
      std::vector<std::string>{worker_binary(), "run", "--config", config}, env,
      dir_.file("worker.log"));
}

WorkerProcess::~WorkerProcess() {
  if (process_->running()) {
    process_->signal(SIGKILL);
    process_->wait(5s);
  }
  if (std::getenv("CRM_TEST_SHOW_LOGS")) std::fprintf(stderr, "%s", process_->log().c_str());
}

std::pair<int, std::string> WorkerProcess::http_get(const std::string& path) const {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(http_port_));
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return {0, ""};
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  int status = 0;
  if (resp.rfind("HTTP/1.", 0) == 0 && resp.size() > 12) status = std::atoi(resp.c_str() + 9);
  auto body = resp.find("\r\n\r\n");
  return {status, body == std::string::npos ? "" : resp.substr(body + 4)};
}

namespace {
struct Ack {
  bool done = false;
  int partition = -1;
  long long offset = -1;
};
void ack_cb(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* ack = static_cast<Ack*>(m->_private);
  ack->done = true;
  ack->partition = m->partition;
  ack->offset = m->err ? -1 : m->offset;
}
}  // namespace

Producer::Producer(const std::string& bootstrap) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof err);
  rd_kafka_conf_set(conf, "message.timeout.ms", "20000", err, sizeof err);
  rd_kafka_conf_set_dr_msg_cb(conf, ack_cb);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) throw std::runtime_error(err);
  rk_ = rk;
}

Producer::~Producer() {
  auto* rk = static_cast<rd_kafka_t*>(rk_);
  rd_kafka_flush(rk, 5000);
  rd_kafka_destroy(rk);
}

long long Producer::send(const std::string& topic, const std::string& key, const std::string& value,
                         const Headers& headers, int partition) {
  auto* rk = static_cast<rd_kafka_t*>(rk_);
  Ack ack;
  rd_kafka_headers_t* h = rd_kafka_headers_new(headers.size());
  for (const auto& [n, v] : headers) rd_kafka_header_add(h, n.c_str(), -1, v.data(), static_cast<ssize_t>(v.size()));
  rd_kafka_resp_err_t err = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_KEY(key.data(), key.size()),
      RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&ack),
      RD_KAFKA_V_END);
  if (err) {
    rd_kafka_headers_destroy(h);
    return -1;
  }
  auto until = std::chrono::steady_clock::now() + 20s;
  while (!ack.done && std::chrono::steady_clock::now() < until) {
    rd_kafka_poll(rk, 50);
  }
  return ack.offset;
}

std::vector<Producer::Delivery> Producer::publish(const std::vector<OutMessage>& messages,
                                                  const std::function<void(size_t)>& before_each) {
  auto* rk = static_cast<rd_kafka_t*>(rk_);
  std::vector<Ack> acks(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const OutMessage& m = messages[i];
    if (before_each) before_each(i);
    for (;;) {
      rd_kafka_headers_t* h = rd_kafka_headers_new(m.headers.size());
      for (const auto& [n, v] : m.headers) {
        rd_kafka_header_add(h, n.c_str(), -1, v.data(), static_cast<ssize_t>(v.size()));
      }
      rd_kafka_resp_err_t err = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(m.topic.c_str()), RD_KAFKA_V_KEY(m.key.data(), m.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(m.value.data()), m.value.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&acks[i]),
          RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      rd_kafka_headers_destroy(h);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        acks[i].done = true;  // refused outright: not acknowledged
        break;
      }
      rd_kafka_poll(rk, 10);  // the local queue is full: let deliveries drain
    }
    rd_kafka_poll(rk, 0);
  }
  rd_kafka_flush(rk, 60000);
  std::vector<Delivery> out;
  out.reserve(acks.size());
  for (const Ack& a : acks) out.push_back(a.done ? Delivery{a.partition, a.offset} : Delivery{});
  return out;
}

size_t Producer::send_all(const std::vector<OutMessage>& messages) {
  size_t acked = 0;
  for (const Delivery& d : publish(messages)) acked += d.offset >= 0;
  return acked;
}

std::string discovered_event(const std::string& event_id, const std::string& prospect_id,
                             const std::string& name, const std::string& time,
                             const std::string& extra_data) {
  return R"({"specversion":"1.0","id":")" + event_id +
         R"(","source":"test","type":"crm.prospect.discovered","time":")" + time +
         R"(","data":{"prospect_id":")" + prospect_id + R"(","name":")" + name + "\"" +
         (extra_data.empty() ? "" : "," + extra_data) + "}}";
}

}  // namespace crm::test

namespace crm::test {

std::vector<ConsumedMessage> consume_topic(const std::string& bootstrap, const std::string& topic,
                                           size_t expected, std::chrono::milliseconds timeout) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  std::string group = "test-reader-" + random_suffix();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", group.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err);
  rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, sizeof err);
  rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof err);
  rd_kafka_conf_set(conf, "heartbeat.interval.ms", "500", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  rd_kafka_poll_set_consumer(rk);
  auto* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  std::vector<ConsumedMessage> out;
  auto until = std::chrono::steady_clock::now() + timeout;
  while (out.size() < expected && std::chrono::steady_clock::now() < until) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ConsumedMessage c;
      if (m->key) c.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload) c.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* h = nullptr;
      if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &value, &size) == 0; ++i) {
          c.headers[name] = value ? std::string(static_cast<const char*>(value), size) : "";
        }
      }
      out.push_back(std::move(c));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

std::string find_program(const std::string& name, const std::vector<std::string>& also) {
  std::vector<std::string> dirs = also;
  std::istringstream path(std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
  for (std::string d; std::getline(path, d, ':');) dirs.push_back(d);
  for (const std::string& d : dirs) {
    const std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::pair<int, std::string> run_cli(const std::vector<std::string>& args,
                                    const std::map<std::string, std::string>& env) {
  TempDir dir;
  std::vector<std::string> argv{worker_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::map<std::string, std::string> e = env;
  if (!e.count("CRM_WORKER_LOG_FORMAT")) e["CRM_WORKER_LOG_FORMAT"] = "text";
  Process p(argv, e, dir.file("out.log"));
  auto code = p.wait(60s);
  return {code.value_or(-1), p.log()};
}

double metric_sum(const std::string& text, const std::string& prefix) {
  double sum = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    auto space = line.rfind(' ');
    if (space != std::string::npos) sum += std::atof(line.c_str() + space + 1);
  }
  return sum;
}

}  // namespace crm::test
