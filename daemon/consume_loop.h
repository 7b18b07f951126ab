#pragma once
// The heart of the daemon: poll one message at a time, batch, apply the
// batch in one transaction, publish its dead letters, then store offsets.
//
//   poll ─► decode ─► batch ─► apply (1 tx, savepoint per event) ─► commit
//        ─► publish dead letters ─► store offsets (committed in background)
//
// An offset is stored only after everything before it is committed in
// PostgreSQL (and its dead letters acknowledged), so a crash anywhere
// redelivers, and processed_events turns redelivery into a no-op.
//
// Transient failures (database down, serialization conflicts, the
// dead-letter topic unreachable) pause the assigned partitions and retry the
// same batch with capped, jittered backoff while polling on, so the group
// membership stays alive; they never dead-letter and never advance offsets.
// Fatal errors end run() with that status.
//
// Runs on the main thread; everything it owns is used only there.

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "daemon/applier.h"
#include "daemon/config.h"
#include "daemon/lifecycle.h"
#include "db/database.h"
#include "monitoring/probes.h"
#include "queue/dead_letter_producer.h"
#include "queue/kafka_consumer.h"

namespace crm {

class ConsumeLoop {
 public:
  ConsumeLoop(const Config& config, db::Database& db, queue::KafkaConsumer& consumer,
              queue::DeadLetterProducer& dead_letters, monitoring::Metrics& metrics,
              Lifecycle& lifecycle, std::function<void()> on_reload);

  // Runs until a stop is requested (drains, returns ok) or a fatal error.
  Status run();

  // For /readyz, from any thread.
  bool assignment_received() const { return assignment_received_.load(); }

 private:
  struct Entry {
    queue::RawMessage msg;
    std::vector<WorkItem> items;  // decoded pieces of msg
  };

  Status poll_into(std::vector<Entry>& into, Millis timeout);
  Status flush();
  // Waits `delay` while polling (messages go to next_), or returns false if
  // the drain deadline has passed.
  bool wait_polling(Millis delay, Status* fatal);
  void drop_revoked();
  void recount_batch_events();
  void pause_assignment();
  void resume_paused();
  Status publish_dead_letters(const std::vector<db::DeadLetter>& letters);
  Status process_replays();
  Millis backoff(int attempt);
  // crm_worker_kafka_consumer_lag_seconds, at most once a second.
  void publish_lag_seconds();
  bool drain_expired() const;

  const Config& config_;
  db::Database& db_;
  queue::KafkaConsumer& consumer_;
  queue::DeadLetterProducer& dead_letters_;
  monitoring::Metrics& metrics_;
  Lifecycle& lifecycle_;
  std::function<void()> on_reload_;
  queue::DecodeLimits limits_;
  db::ProjectionOptions projection_;

  std::vector<Entry> batch_;
  std::vector<Entry> next_;  // arrived while batch_ was being retried
  std::set<queue::TopicPartition> paused_;  // paused by us for a retry
  size_t batch_events_ = 0;
  std::chrono::steady_clock::time_point batch_started_{};
  std::chrono::steady_clock::time_point last_replay_check_{};
  std::chrono::steady_clock::time_point last_lag_publish_{};
  std::optional<std::chrono::steady_clock::time_point> drain_deadline_;
  std::atomic<bool> assignment_received_{false};
  std::mt19937_64 rng_{std::random_device{}()};
};

// Decodes one message with the decoder its topic calls for.
std::vector<WorkItem> decode_message(const queue::RawMessage& msg, const Config& config,
                                     const queue::DecodeLimits& limits);

queue::DecodeLimits decode_limits(const Config& config);

}  // namespace crm
