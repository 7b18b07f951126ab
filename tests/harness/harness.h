#pragma once
// The integration-test harness (TESTPLAN.md): a database of its own in the
// throwaway PostgreSQL cluster the ctest fixture started, the dev broker as
// a real process with its control socket, crm-worker processes, and a
// producer that records what the broker acknowledged.
//
// Everything is loopback-only and every wait has a deadline.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fstream>
#include <thread>

#include <pqxx/pqxx>

namespace crm::test {

using namespace std::chrono_literals;

// Polls `condition` every 50 ms until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// A fresh temporary directory, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct DatabaseOptions {
  // The scripts/pg.sh cluster directory; "" means $CRM_TEST_PG_DIR (the
  // ctest fixture's cluster).
  std::string pg_dir;
  // Production's roles (deploy/sql/roles.sql): a migrator that owns the
  // schema and applies the migrations, and a runtime role with rows only,
  // which url() then names. Role names are unique per database.
  bool roles = false;
};

// A database of its own, created in a scripts/pg.sh cluster and dropped at
// the end (with its roles).
class TestDatabase {
 public:
  explicit TestDatabase(const DatabaseOptions& options = {});
  ~TestDatabase();
  // libpq connection string for this database, as the superuser: what the
  // test itself uses to arrange and inspect.
  const std::string& conninfo() const { return conninfo_; }
  // A postgresql:// URL for crm-worker's database.url (the runtime role's,
  // with `roles`).
  const std::string& url() const { return url_; }
  // url() over TCP to 127.0.0.1:port (the cluster's, or a proxy's), without
  // TLS.
  std::string tcp_url(int port) const;
  std::unique_ptr<pqxx::connection> connect() const;
  // Runs a query and returns the first column of the first row as text
  // ("" for none / NULL).
  std::string scalar(const std::string& sql) const;
  long long count(const std::string& sql) const;
  // Simulates a database outage for this database only: refuses new
  // connections and terminates the open ones (false), or ends it (true).
  void set_available(bool available) const;

 private:
  std::string admin_conninfo_;
  std::string name_;
  std::string conninfo_;
  std::string url_;
  std::string user_;
  std::vector<std::string> roles_;
};

// A child process with its stdout/stderr in files.
class Process {
 public:
  Process(std::vector<std::string> argv, std::map<std::string, std::string> env,
          const std::string& log_path);
  ~Process();  // SIGKILL if still running
  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits for the exit status; nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  const std::string& log_path() const { return log_path_; }
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// `crm-worker dev-broker` in its own process, with its control socket.
class DevBrokerProcess {
 public:
  explicit DevBrokerProcess(int brokers = 3, int partitions = 6);
  const std::string& bootstrap() const { return bootstrap_; }
  // Sends one control command, returns the answer line.
  std::string control(const std::string& command);

 private:
  TempDir dir_;
  std::unique_ptr<Process> process_;
  std::string bootstrap_;
};

// crm-worker run, configured by environment for one test. `config_toml` is
// appended to a file whose last table is [kafka.properties]: bare keys there
// are librdkafka properties; start a [table] for anything else.
class WorkerProcess {
 public:
  WorkerProcess(const TestDatabase& db, const std::string& bootstrap,
                std::map<std::string, std::string> extra_env = {},
                const std::string& config_toml = "");
  ~WorkerProcess();
  Process& process() { return *process_; }
  int http_port() const { return http_port_; }
  // The TOML file the worker was started with (edit it, then SIGHUP).
  std::string config_path() const { return dir_.file("crm-worker.toml"); }
  // GET http://127.0.0.1:<port><path>; returns {status, body}.
  std::pair<int, std::string> http_get(const std::string& path) const;

 private:
  TempDir dir_;
  std::unique_ptr<Process> process_;
  int http_port_ = 0;
};

// A librdkafka producer that waits for every acknowledgement.
class Producer {
 public:
  explicit Producer(const std::string& bootstrap);
  ~Producer();
  using Headers = std::vector<std::pair<std::string, std::string>>;
  // Produces and waits for the ack; returns the offset, or -1 on failure.
  long long send(const std::string& topic, const std::string& key, const std::string& value,
                 const Headers& headers = {}, int partition = -1);
  struct OutMessage {
    std::string topic, key, value;
    Headers headers = {};
  };
  // Where the broker put a message; offset -1 when it was not acknowledged.
  struct Delivery {
    int partition = -1;
    long long offset = -1;
  };
  // Produces all of them without waiting for acknowledgements in between
  // (`before_each(i)`, when given, runs before message i is produced: a
  // benchmark paces and timestamps there), then waits for the
  // acknowledgements; returns each message's delivery, in order.
  std::vector<Delivery> publish(const std::vector<OutMessage>& messages,
                                const std::function<void(size_t)>& before_each = {});
  // publish(), counting the acknowledged.
  size_t send_all(const std::vector<OutMessage>& messages);

 private:
  void* rk_ = nullptr;
};

// A structured-mode CloudEvent for crm.prospect.discovered.
std::string discovered_event(const std::string& event_id, const std::string& prospect_id,
                             const std::string& name, const std::string& time,
                             const std::string& extra_data = "");

// A free TCP port on 127.0.0.1 (bound and released).
int free_port();

// Path of the crm-worker binary under test.
std::string worker_binary();

}  // namespace crm::test

namespace crm::test {

struct ConsumedMessage {
  std::string key;
  std::string value;
  std::map<std::string, std::string> headers;
};

// Reads `topic` from the beginning with a fresh consumer group until
// `expected` messages arrived or `timeout` passed.
std::vector<ConsumedMessage> consume_topic(const std::string& bootstrap, const std::string& topic,
                                           size_t expected, std::chrono::milliseconds timeout);

// An executable by name: the first in `also`, then $PATH, that is there
// ("" if none). Process runs argv[0] as a path.
std::string find_program(const std::string& name, const std::vector<std::string>& also = {});

// Runs crm-worker with `args` and the environment, returns {exit code, output}.
std::pair<int, std::string> run_cli(const std::vector<std::string>& args,
                                    const std::map<std::string, std::string>& env = {});

// The value of one series in Prometheus text (0 if absent), e.g.
// metric_value(body, "crm_worker_events_total{outcome=\"applied\"") sums
// every series whose text starts with that prefix.
double metric_sum(const std::string& metrics_text, const std::string& series_prefix);

}  // namespace crm::test
