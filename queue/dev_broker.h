#pragma once
// A Kafka-protocol broker cluster for development and tests: librdkafka's
// mock cluster (rdkafka_mock.h, experimental in 2.0.2) listening on loopback
// TCP. Used by `crm-worker dev-broker` (its own process, with an optional
// fault-injection control socket) and by `run` when kafka.brokers is
// "embedded" (in-process).
//
// The mock keeps all data in memory and drops the oldest message sets past
// 5 MiB or 100,000 sets per partition: never kill it mid-test, inject faults
// through the control commands instead.
//
// Thread safety: the mock cluster runs its own threads; the methods here may
// be called from any one thread at a time. execute() may also run while the
// control socket thread executes commands (they are serialised inside).

#include <memory>
#include <string>
#include <vector>

#include "daemon/core/status.h"

namespace crm::queue {

class DevBroker {
 public:
  // Starts `brokers` mock brokers and creates each topic with `partitions`
  // partitions (replication factor min(3, brokers)).
  static Result<std::unique_ptr<DevBroker>> start(int brokers, int partitions,
                                                  const std::vector<std::string>& topics);
  // Stops the control socket (removing its file), then the cluster; takes
  // about 1 s with librdkafka 2.0.2 (see dev_broker.cc).
  ~DevBroker();
  DevBroker(const DevBroker&) = delete;
  DevBroker& operator=(const DevBroker&) = delete;

  // "127.0.0.1:port,127.0.0.1:port,..." for bootstrap.servers.
  const std::string& bootstrap_servers() const;

  // Executes one control command and returns "ok" or "error: <why>".
  // Commands (SPEC.md §2):
  //   down B | up B               broker B (-1 = all) refuses / accepts
  //   rtt B MS                    add round-trip latency to broker B
  //   err API_KEY COUNT CODE...   next COUNT requests of that API fail with
  //                               these codes (names like REQUEST_TIMED_OUT
  //                               or numbers; one code repeats for all)
  //   clear API_KEY               forget pushed errors for that API
  //   coordinator GROUP B         pin the group's coordinator to broker B
  //   leader TOPIC PARTITION B    move a partition's leader (-1 = none)
  //   create TOPIC PARTITIONS     create another topic
  // API_KEY is a number or a name (Produce, Fetch, ListOffsets, Metadata,
  // OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup, Heartbeat,
  // LeaveGroup, SyncGroup, ApiVersion).
  std::string execute(const std::string& command_line);

  // Serves the control protocol on a unix stream socket at `path`: one
  // command per line, one answer line per command, any number of clients.
  // Runs on a background thread until the DevBroker is destroyed.
  Status serve_control_socket(const std::string& path);

 private:
  struct Impl;
  explicit DevBroker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crm::queue
