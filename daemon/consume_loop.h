#pragma once
// The heart of the daemon: poll one message at a time, batch, guard the
// batch, decode and apply it in one transaction, publish its dead letters,
// then store offsets.
//
//   poll ─► batch ─► guard ─► decode ─► apply (1 tx per lane, savepoint per event)
//        ─► publish dead letters ─► store offsets (committed in background)
//
// Lanes: a chunk whose messages fall into groups that share no lock key
// (db::add_lock_keys: prospect, entity, SendGrid message id) is applied as
// up to database.pool_size transactions at once, each on a connection of
// its own, so the database's work uses more than one core. A message is
// never split across lanes. A lane that fails leaves its messages in the
// batch for the retry; the others are done. Offsets and the guard's ranges
// then move only as far as everything before them in their partition is
// committed.
//
// An offset is stored only after everything before it is committed in
// PostgreSQL (and its dead letters acknowledged), so a crash anywhere
// redelivers, and processed_events turns redelivery into a no-op.
//
// The guard (db/consume_guard.h) is for a message that kills the worker
// every time it is decoded or applied, which redelivery alone would turn
// into a crash loop that blocks its partition for good. Before a batch is
// decoded, the offsets it holds are recorded; the apply transaction
// releases them. A partition newly assigned with offsets still recorded
// had a worker die on them, so those messages are applied one at a time,
// each counted before it is decoded: a message that has been counted more
// than consumer.crash_attempts times becomes a dead letter (crashed_worker)
// without being decoded again. A worker that gives a message up without
// dying (partition revoked, drain deadline) takes its count back.
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
#include <map>
#include <memory>
#include <set>
#include <string>
#include <optional>
#include <random>
#include <vector>

#include "daemon/applier.h"
#include "daemon/config.h"
#include "daemon/lifecycle.h"
#include "db/database.h"
#include "db/pg_stores.h"
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
    std::vector<WorkItem> items;  // decoded pieces of msg, once decoded
    bool decoded = false;
    bool guarded = false;  // its offset is recorded in consumer_inflight
    // A record of it may have committed, so this worker's row may name it.
    // Unlike `guarded` it stays set when a failed apply has the offset
    // recorded again: letting the partition go must still drop the row.
    bool recorded = false;
    bool crashed_before = false;  // a crashed_worker dead letter already
  };
  // What a flush has committed so far.
  struct Applied {
    std::vector<WorkItem> items;
    std::vector<ItemResult> results;
    std::map<queue::TopicPartition, std::int64_t> next_offsets;
    // Messages of a lane that failed, not applied since: no offset of
    // their partition at or past them may be stored.
    std::set<std::pair<queue::TopicPartition, std::int64_t>> failed;
    size_t messages = 0;
  };
  using Ranges = std::map<queue::TopicPartition, std::pair<std::int64_t, std::int64_t>>;

  Status poll_into(std::vector<Entry>& into, Millis timeout);
  Status flush();
  // Applies the next message on its own (if one is in a range a dead
  // worker left) or the next chunk of the batch; moves what it committed
  // from batch_ to `done`.
  Status apply_step(Applied& done);
  Status learn_unreleased();
  Status apply_solo(size_t index, Applied& done);
  Status apply_chunk(Applied& done);
  // The first `count` entries of batch_ grouped into lanes (entry indices,
  // ascending); one lane (or none) when they cannot be split.
  std::vector<std::vector<size_t>> split_lanes(size_t count);
  // Widens each range of `release` whose partition is in ahead_: to that
  // offset when no message of the partition left in batch_ (those `left`
  // says are still unapplied) is below it, else to just below the lowest
  // such message. Returns the partitions caught up.
  std::set<queue::TopicPartition> extend_past_gaps(Ranges& release,
                                                   const std::function<bool(size_t)>& left) const;
  Status apply_lanes(const std::vector<std::vector<size_t>>& lanes, Applied& done);
  void decode(Entry& e);
  void take_applied(size_t first, size_t count, std::vector<WorkItem> items,
                    std::vector<ItemResult> results, Applied& done);
  // The same for the entries at `indices` (ascending).
  void take_entries(const std::vector<size_t>& indices, std::vector<WorkItem> items,
                    std::vector<ItemResult> results, Applied& done);
  bool solo(const Entry& e) const;
  // Deletes the counts this worker took back (forget_).
  Status settle_forgets();
  // This worker gives `partitions` up alive: its ranges and counts there
  // go (best effort; counts not taken back now are at the next step).
  void give_up(const std::set<queue::TopicPartition>& partitions);
  // Where this worker has ranges recorded or a count held: what it gives
  // up when it stops with work left.
  std::set<queue::TopicPartition> own_partitions() const;
  // Waits `delay` while polling (messages go to next_), or returns false if
  // the drain deadline has passed.
  bool wait_polling(Millis delay, Status* fatal);
  void drop_revoked();
  void recount_batch_bytes();
  void pause_assignment();
  void resume_paused();
  Status publish_dead_letters(const std::vector<db::DeadLetter>& letters);
  Status process_replays();
  // Applies one requested replay in `tx` and marks it replayed or failed.
  Status replay_one(pqxx::transaction_base& tx, const db::ReplayRequest& req, bool* applied);
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

  // Connections of lanes 2.. (lane 1 is db_).
  std::vector<std::unique_ptr<db::Database>> lanes_;
  // Applied ranges whose guard rows are not released yet (a release that
  // failed after its lanes committed): released with the next chunk.
  Ranges unreleased_;
  // Per partition, the highest offset a lane applied past a message of a
  // lane that failed. A release cannot cover it until every message of the
  // partition below it is applied; then it must, or the guard's row would
  // keep starting there, where no later release matches it.
  std::map<queue::TopicPartition, std::int64_t> ahead_;
  std::vector<Entry> batch_;
  std::vector<Entry> next_;  // arrived while batch_ was being retried
  size_t batch_bytes_ = 0;
  // Partitions looked up in consumer_inflight since they were assigned: the
  // ranges dead workers left there, to apply one message at a time.
  std::map<queue::TopicPartition, std::vector<std::pair<std::int64_t, std::int64_t>>> solo_ranges_;
  // Messages this worker is counted on (begin_solo) while applying them,
  // and counts of its own to take back (it gave the message up alive).
  std::set<std::pair<queue::TopicPartition, std::int64_t>> held_;
  std::set<std::pair<queue::TopicPartition, std::int64_t>> forget_;
  const std::string worker_id_;  // this process, in consumer_inflight
  std::set<queue::TopicPartition> paused_;  // paused by us for a retry
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
