// `crm-worker run`: wires the daemon together and runs the consume loop on
// the main thread until SIGTERM (drain, exit 0) or a fatal error (exit 1).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "daemon/consume_loop.h"
#include "daemon/core/stoppable.h"
#include "daemon/followup_executor.h"
#include "daemon/lifecycle.h"
#include "daemon/logging.h"
#include "daemon/notifier.h"
#include "daemon/sync_executor.h"
#include "db/database.h"
#include "db/migrations.h"
#include "db/projections.h"
#include "handlers/routing.h"
#include "monitoring/http_server.h"
#include "monitoring/probes.h"
#include "queue/dead_letter_producer.h"
#include "queue/dev_broker.h"
#include "queue/kafka_consumer.h"

namespace crm {
namespace {

std::vector<std::string> consumed_topics(const Config& c) {
  return {c.kafka.topics.outreach, c.kafka.topics.sync, c.kafka.topics.followups,
          c.kafka.topics.sendgrid};
}

// Connects and migrates, retrying while the database is unreachable (it may
// start after us) until a stop is requested. Fatal problems (a schema newer
// than this binary, a failing migration) end the start.
Status prepare_database(db::Database& db, Lifecycle& lifecycle) {
  auto delay = std::chrono::milliseconds(250);
  for (int attempt = 0;; ++attempt) {
    auto conn = db.connection();
    Status s;
    if (conn) {
      auto report = db::apply_migrations(**conn, db::embedded_migrations());
      if (report) {
        log::info("database schema up to date", {{"applied", report->applied},
                                                  {"version", report->current_version}});
        return Status::ok();
      }
      s = report.status();
      db.disconnect();
    } else {
      s = conn.status();
    }
    if (!s.is_transient()) return s;
    if (attempt == 0 || attempt % 10 == 0) {
      log::warn("database not reachable, retrying", {{"error", s.message()}});
    }
    auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
      if (lifecycle.stop_requested()) return Status::transient("stopped", "stopped before the database was reachable");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    delay = std::min(delay * 2, std::chrono::milliseconds(5000));
  }
}

// Names this process in lease columns: host and pid.
std::string instance_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "localhost") + ":" + std::to_string(::getpid());
}

// The executors that work through the database queues, each on a thread of
// its own with its own connection, stopped when the consume loop ends.
class Executors {
 public:
  Executors(const Config& config, const std::string& conninfo, monitoring::Metrics& metrics)
      : followups_(config, conninfo, metrics, instance_name()),
        sync_(config, conninfo, metrics, instance_name()) {
    threads_.emplace_back([this] { followups_.run(stop_); });
    threads_.emplace_back([this] { sync_.run(stop_); });
    if (config.slack.webhook_url.is_set()) {
      notifier_.emplace(config, conninfo, metrics, instance_name());
      threads_.emplace_back([this] { notifier_->run(stop_); });
    }
  }
  ~Executors() { stop(); }
  void stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  std::atomic<bool> stop_{false};
  FollowupExecutor followups_;
  SyncExecutor sync_;
  std::optional<Notifier> notifier_;
  std::vector<std::thread> threads_;
};

// Keeps the planner's statistics of the tables a batch reads up with their
// growth (db::analyze_grown_tables, migration 0008), every ten seconds, on
// a thread and connection of its own: an ANALYZE of the timeline takes a
// quarter of a second, which the consume loop must not wait for.
class StatisticsKeeper {
 public:
  explicit StatisticsKeeper(const std::string& conninfo) : db_(conninfo) {
    thread_ = std::thread([this] { run(); });
  }
  ~StatisticsKeeper() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    while (!stop_.load()) {
      std::vector<std::string> analysed;
      Status s = db_.transact([&](pqxx::work& tx) {
        analysed = db::analyze_grown_tables(tx);
        return Status::ok();
      });
      if (!s) {
        // Only plans suffer: autovacuum still analyses, later.
        log::debug("planner statistics not refreshed", {{"error", s.message()}});
      } else if (!analysed.empty()) {
        std::string names;
        for (const std::string& t : analysed) names += (names.empty() ? "" : ",") + t;
        log::debug("planner statistics refreshed", {{"tables", names}});
      }
      sleep_unless_stopped(stop_, Millis{10000});
    }
  }

  db::Database db_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

int command_run(const std::vector<std::string>& args) {
  Options opts;
  std::string error;
  if (!parse_options(args, {"--config"}, {}, &opts, &error)) return usage_error(error);
  if (!opts.positional.empty()) return usage_error("run takes no arguments");
  auto loaded = load_config_or_report(opts);
  if (!loaded) return kExitUsage;
  const Config config = *loaded;
  const std::string config_path = opts.values.count("--config") ? opts.values.at("--config") : "";
  const std::string conninfo = database_conninfo(config);  // before any thread starts

  Lifecycle::block_signals();
  Lifecycle lifecycle;
  log::info("starting", {{"version", CRM_WORKER_VERSION},
                         {"revision", CRM_WORKER_REVISION},
                         {"config", config.source_file},
                         {"group", config.kafka.group_id}});

  std::unique_ptr<queue::DevBroker> embedded;
  std::string bootstrap = config.kafka.brokers;
  if (config.kafka.brokers == "embedded") {
    std::vector<std::string> topics = consumed_topics(config);
    topics.push_back(config.kafka.topics.dead_letter);
    auto broker = queue::DevBroker::start(1, config.kafka.embedded_partitions, topics);
    if (!broker) {
      log::error("cannot start the embedded broker", {{"error", broker.status().message()}});
      return kExitFailure;
    }
    embedded = std::move(*broker);
    bootstrap = embedded->bootstrap_servers();
    log::warn("using the embedded development broker: data lives in this process only",
              {{"bootstrap", bootstrap}});
    if (!config.kafka.embedded_port_file.empty() &&
        !write_file_atomically(config.kafka.embedded_port_file, bootstrap)) {
      log::error("cannot write the embedded broker's port file",
                 {{"path", config.kafka.embedded_port_file}});
      return kExitFailure;
    }
  }

  db::Database db(conninfo);
  if (Status s = prepare_database(db, lifecycle); !s) {
    if (lifecycle.stop_requested()) return kExitOk;
    log::error("cannot prepare the database", {{"error", s.message()}});
    return kExitFailure;
  }

  std::vector<std::string> types;
  for (auto t : handlers::routed_types()) types.emplace_back(t);
  std::vector<std::string> metric_topics = consumed_topics(config);
  metric_topics.push_back(config.kafka.topics.dead_letter);
  monitoring::Metrics metrics(metric_topics, types);

  auto consumer = queue::KafkaConsumer::create(
      config, bootstrap, {.on_lag = [&](const auto& lags) { metrics.set_lag(lags); }});
  if (!consumer) {
    log::error("cannot create the Kafka consumer", {{"error", consumer.status().message()}});
    return consumer.status().is_permanent() ? kExitUsage : kExitFailure;
  }
  auto producer = queue::DeadLetterProducer::create(config, bootstrap);
  if (!producer) {
    log::error("cannot create the dead-letter producer", {{"error", producer.status().message()}});
    return kExitFailure;
  }
  if (Status s = (*consumer)->subscribe(consumed_topics(config)); !s) {
    log::error("cannot subscribe", {{"error", s.message()}});
    return kExitFailure;
  }

  auto reload = [&] {
    ConfigLoadResult r = load_config(config_path, process_environment());
    log::Level level;
    if (r.ok() && log::parse_level(r.config.log.level, &level)) {
      log::set_level(level);
      log::info("configuration reloaded", {{"log_level", r.config.log.level}});
    } else {
      log::warn("reload ignored: the configuration has errors",
                {{"errors", static_cast<long>(r.errors.size())}});
    }
  };
  ConsumeLoop loop(config, db, **consumer, **producer, metrics, lifecycle, reload);

  auto http = monitoring::HttpServer::start(config.http.listen, metrics.registry(), [&]() -> std::string {
    if (!db.reachable()) return "database not reachable";
    if (!loop.assignment_received()) return "no Kafka assignment yet";
    return "";
  });
  if (!http) {
    log::error("cannot start the HTTP endpoint", {{"error", http.status().message()}});
    return kExitFailure;
  }
  log::info("serving metrics and health", {{"listen", config.http.listen}});

  StatisticsKeeper statistics(conninfo);
  std::optional<Executors> executors;
  if (config.executors.enabled) {
    executors.emplace(config, conninfo, metrics);
  } else {
    log::info("executors off: this instance only consumes (executors.enabled = false)");
  }
  Status result = loop.run();
  lifecycle.notify_stopping();
  executors.reset();
  (*consumer)->close(config.consumer.drain_timeout);
  if (!result) {
    log::error("stopping on a fatal error", {{"reason", result.reason()}, {"error", result.message()}});
    return kExitFailure;
  }
  log::info("stopped");
  return kExitOk;
}

}  // namespace crm
