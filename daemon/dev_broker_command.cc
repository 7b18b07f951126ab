// `crm-worker dev-broker`: a Kafka-protocol broker cluster for development
// and tests (queue/dev_broker.h), until SIGTERM or SIGINT.

#include <signal.h>

#include <cstdio>
#include <fstream>

#include "daemon/cli_support.h"
#include "daemon/commands.h"
#include "daemon/logging.h"
#include "queue/dev_broker.h"

namespace crm {

int command_dev_broker(const std::vector<std::string>& args) {
  Options opts;
  std::string error;
  if (!parse_options(args, {"--brokers", "--partitions", "--port-file", "--control", "--config"},
                     {}, &opts, &error)) {
    return usage_error(error);
  }
  if (!opts.positional.empty()) return usage_error("dev-broker takes no arguments");
  auto number = [&](const char* name, int def, int lo, int hi, int* out) {
    auto it = opts.values.find(name);
    if (it == opts.values.end()) {
      *out = def;
      return true;
    }
    try {
      size_t used = 0;
      int v = std::stoi(it->second, &used);
      if (used != it->second.size() || v < lo || v > hi) throw std::out_of_range("range");
      *out = v;
      return true;
    } catch (...) {
      usage_error(std::string(name) + " must be a number from " + std::to_string(lo) + " to " +
                  std::to_string(hi) + ", got '" + it->second + "'");
      return false;
    }
  };
  int brokers = 0, partitions = 0;
  if (!number("--brokers", 3, 1, 16, &brokers)) return kExitUsage;
  if (!number("--partitions", 6, 1, 256, &partitions)) return kExitUsage;
  auto config = load_config_or_report(opts);
  if (!config) return kExitUsage;

  // Block the stop signals before the mock cluster starts its threads, so
  // only sigwait below receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  const KafkaTopics& t = config->kafka.topics;
  auto broker = queue::DevBroker::start(brokers, partitions,
                                        {t.outreach, t.sync, t.followups, t.sendgrid, t.dead_letter});
  if (!broker) {
    std::fprintf(stderr, "crm-worker: cannot start the dev broker: %s\n", broker.status().message().c_str());
    return kExitFailure;
  }
  const std::string& bootstrap = (*broker)->bootstrap_servers();
  if (auto it = opts.values.find("--control"); it != opts.values.end()) {
    if (Status s = (*broker)->serve_control_socket(it->second); !s) {
      std::fprintf(stderr, "crm-worker: control socket %s: %s\n", it->second.c_str(), s.message().c_str());
      return kExitFailure;
    }
  }
  if (auto it = opts.values.find("--port-file"); it != opts.values.end()) {
    if (!write_file_atomically(it->second, bootstrap)) {
      std::fprintf(stderr, "crm-worker: cannot write the port file %s\n", it->second.c_str());
      return kExitFailure;
    }
  }
  std::printf("%s\n", bootstrap.c_str());
  std::fflush(stdout);
  log::info("dev broker running", {{"bootstrap", bootstrap},
                                   {"brokers", brokers},
                                   {"partitions", partitions}});
  int sig = 0;
  sigwait(&set, &sig);
  log::info("dev broker stopping");
  return kExitOk;
}

}  // namespace crm
