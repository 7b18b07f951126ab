#pragma once
// The Kafka consumer: a librdkafka high-level consumer configured for
// at-least-once with our own offset storing (REFERENCE.md §5.1):
//   enable.auto.offset.store=false  — an offset is stored only after its
//                                     effects are committed in PostgreSQL;
//   enable.auto.commit=true         — librdkafka commits stored offsets in
//                                     the background, and on revoke/close.
// Messages are consumed one at a time (rd_kafka_consumer_poll):
// librdkafka 2.0.2's batch consume API can lose messages around rebalances
// (fixed upstream in 2.1.0), so the caller batches.
//
// Used by the consume loop on its thread only. The rebalance and stats
// callbacks run inside poll(), on that same thread.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "daemon/config.h"
#include "daemon/core/status.h"
#include "queue/decode.h"

namespace crm::queue {

using TopicPartition = std::pair<std::string, std::int32_t>;

// Per-partition lag from librdkafka statistics, for the lag gauge.
struct PartitionLag {
  std::string topic;
  std::int32_t partition;
  std::int64_t lag;  // messages: high watermark − committed offset
};

class KafkaConsumer {
 public:
  struct Callbacks {
    // Called with the lag of every assigned partition, each stats interval.
    std::function<void(const std::vector<PartitionLag>&)> on_lag;
  };

  // `bootstrap` replaces kafka.brokers (the embedded broker's address).
  static Result<std::unique_ptr<KafkaConsumer>> create(const Config& config,
                                                       const std::string& bootstrap,
                                                       Callbacks callbacks);
  ~KafkaConsumer();

  Status subscribe(const std::vector<std::string>& topics);

  // Waits up to `timeout` for one message. nullopt on timeout or on an
  // informational event. kFatal when librdkafka reports a fatal error.
  Result<std::optional<RawMessage>> poll(Millis timeout);

  // Stores next-offsets (last applied + 1) for the background commit.
  // Partitions no longer assigned are skipped: their work is the new
  // owner's now, and that is not an error to retry.
  Status store_offsets(const std::map<TopicPartition, std::int64_t>& next_offsets);

  void pause(const std::set<TopicPartition>& partitions);
  void resume(const std::set<TopicPartition>& partitions);

  bool is_assigned(const TopicPartition& tp) const { return assigned_.count(tp) != 0; }
  const std::set<TopicPartition>& assignment() const { return assigned_; }
  // True once the group handed us an assignment (possibly empty).
  bool assignment_received() const { return assignment_received_; }
  // Partitions revoked or lost since the last call.
  std::set<TopicPartition> take_revoked();

  // Leaves the group, committing stored offsets; gives up waiting after
  // `deadline`. Safe to call twice.
  void close(Millis deadline);

 private:
  struct Impl;
  explicit KafkaConsumer(std::unique_ptr<Impl> impl);
  friend struct Impl;
  std::unique_ptr<Impl> impl_;
  std::set<TopicPartition> assigned_;
  std::set<TopicPartition> revoked_;
  bool assignment_received_ = false;
};

// Builds a librdkafka configuration from layers, later ones winning:
// our defaults, then the operator's kafka.properties, then the settings the
// delivery guarantee depends on. Returns kPermanent naming the property
// librdkafka rejected (never its value: it may be a password). The caller
// owns the returned rd_kafka_conf_t* (as void* to keep librdkafka out of
// this header).
Result<void*> make_rdkafka_conf(const std::map<std::string, std::string>& defaults,
                                const std::map<std::string, std::string>& properties,
                                const std::map<std::string, std::string>& required);

}  // namespace crm::queue
