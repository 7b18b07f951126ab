#include "daemon/consume_loop.h"

#include <algorithm>
#include <map>

#include "daemon/core/backoff.h"
#include "daemon/core/crash_point.h"
#include "daemon/logging.h"
#include "db/pg_stores.h"

namespace crm {
namespace {

using Clock = std::chrono::steady_clock;

// Backoff for database and dead-letter-topic outages: short at first so a
// blip costs little, capped so a long outage is noticed within seconds of
// its end.
constexpr Millis kRetryInitial{200};
constexpr Millis kRetryMax{10000};
constexpr Millis kPollSlice{50};
constexpr Millis kReplayInterval{1000};
constexpr int kReplayBatch = 100;

const char* outcome_label(Outcome o) {
  switch (o) {
    case Outcome::kApplied: return "applied";
    case Outcome::kDuplicate: return "duplicate";
    case Outcome::kDeadLetter: return "dead_letter";
  }
  return "applied";
}

}  // namespace

queue::DecodeLimits decode_limits(const Config& config) {
  queue::DecodeLimits l;
  l.max_message_bytes = config.consumer.max_message_bytes;
  l.max_json_depth = config.consumer.max_json_depth;
  l.max_string_bytes = config.consumer.max_string_bytes;
  l.max_batch_elements = config.consumer.max_batch_elements;
  return l;
}

std::vector<WorkItem> decode_message(const queue::RawMessage& msg, const Config& config,
                                     const queue::DecodeLimits& limits) {
  std::vector<queue::DecodedItem> decoded = msg.origin.topic == config.kafka.topics.sendgrid
                                                ? queue::decode_sendgrid(msg, limits)
                                                : queue::decode_cloudevent(msg, limits);
  std::string headers = headers_to_json(msg);
  std::vector<WorkItem> out;
  out.reserve(decoded.size());
  for (auto& d : decoded) out.push_back(WorkItem{std::move(d), msg.key, headers});
  return out;
}

ConsumeLoop::ConsumeLoop(const Config& config, db::Database& db, queue::KafkaConsumer& consumer,
                         queue::DeadLetterProducer& dead_letters, monitoring::Metrics& metrics,
                         Lifecycle& lifecycle, std::function<void()> on_reload)
    : config_(config),
      db_(db),
      consumer_(consumer),
      dead_letters_(dead_letters),
      metrics_(metrics),
      lifecycle_(lifecycle),
      on_reload_(std::move(on_reload)),
      limits_(decode_limits(config)),
      projection_(db::projection_options(config)) {}

bool ConsumeLoop::drain_expired() const {
  return drain_deadline_ && Clock::now() >= *drain_deadline_;
}

Millis ConsumeLoop::backoff(int attempt) {
  return backoff_delay(attempt, kRetryInitial, kRetryMax,
                       std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
}

Status ConsumeLoop::poll_into(std::vector<Entry>& into, Millis timeout) {
  auto polled = consumer_.poll(timeout);
  assignment_received_.store(consumer_.assignment_received());
  if (!polled) return polled.status();
  drop_revoked();
  if (!polled->has_value()) return Status::ok();
  queue::RawMessage& msg = **polled;
  crash_point("after_poll");
  // A straggler from a partition revoked in this very poll belongs to the
  // new owner now.
  if (!consumer_.is_assigned({msg.origin.topic, msg.origin.partition})) return Status::ok();
  Entry e;
  e.items = decode_message(msg, config_, limits_);
  e.msg = std::move(msg);
  if (&into == &batch_) {
    if (batch_.empty()) batch_started_ = Clock::now();
    batch_events_ += e.items.size();
  }
  into.push_back(std::move(e));
  return Status::ok();
}

void ConsumeLoop::recount_batch_events() {
  batch_events_ = 0;
  for (const auto& e : batch_) batch_events_ += e.items.size();
}

void ConsumeLoop::drop_revoked() {
  std::set<queue::TopicPartition> revoked = consumer_.take_revoked();
  if (revoked.empty()) return;
  auto gone = [&](const Entry& e) {
    return revoked.count({e.msg.origin.topic, e.msg.origin.partition}) != 0;
  };
  size_t before = batch_.size() + next_.size();
  std::erase_if(batch_, gone);
  std::erase_if(next_, gone);
  recount_batch_events();
  size_t dropped = before - batch_.size() - next_.size();
  if (dropped > 0) {
    log::info("dropped unapplied messages of revoked partitions", {{"messages", static_cast<long>(dropped)}});
  }
}

void ConsumeLoop::pause_assignment() {
  // Called on every retry wait: partitions assigned during an outage (a
  // cooperative rebalance adds them without a revoke) are paused too, so
  // only already-fetched stragglers reach next_ and memory stays bounded.
  std::set<queue::TopicPartition> fresh;
  for (const auto& tp : consumer_.assignment()) {
    if (paused_.insert(tp).second) fresh.insert(tp);
  }
  consumer_.pause(fresh);
}

void ConsumeLoop::resume_paused() {
  // Resume every partition we paused, assigned or not: in librdkafka 2.0.2
  // a pause outlives unassign and reassign, so a partition revoked during
  // an outage and handed back later would otherwise never be fetched again.
  consumer_.resume(paused_);
  paused_.clear();
}

void ConsumeLoop::publish_lag_seconds() {
  const auto now = Clock::now();
  if (now - last_lag_publish_ < std::chrono::seconds(1)) return;
  last_lag_publish_ = now;
  // The oldest message of each partition we hold (in the batch being
  // applied or retried, or arrived meanwhile): everything before it is
  // committed, so it is the oldest unprocessed one.
  std::map<queue::TopicPartition, std::int64_t> oldest;
  for (const auto* entries : {&batch_, &next_}) {
    for (const Entry& e : *entries) {
      auto [it, fresh] = oldest.emplace(queue::TopicPartition{e.msg.origin.topic, e.msg.origin.partition},
                                        e.msg.timestamp_ms);
      if (!fresh) it->second = std::min(it->second, e.msg.timestamp_ms);
    }
  }
  const std::int64_t now_ms = now_timestamp().micros_since_epoch / 1000;
  std::vector<std::pair<queue::TopicPartition, double>> ages;
  for (const queue::TopicPartition& tp : consumer_.assignment()) {
    auto it = oldest.find(tp);
    ages.push_back({tp, it == oldest.end() ? 0.0 : std::max<double>(0, (now_ms - it->second) / 1000.0)});
  }
  metrics_.set_lag_seconds(ages);
}

bool ConsumeLoop::wait_polling(Millis delay, Status* fatal) {
  auto until = Clock::now() + delay;
  pause_assignment();
  while (Clock::now() < until) {
    if (lifecycle_.stop_requested() && !drain_deadline_) {
      drain_deadline_ = Clock::now() + config_.consumer.drain_timeout;
      lifecycle_.notify_stopping();
    }
    if (drain_expired()) return false;
    lifecycle_.watchdog_ping();
    publish_lag_seconds();
    auto left = std::chrono::duration_cast<Millis>(until - Clock::now());
    Status s = poll_into(next_, std::clamp(left, Millis{1}, kPollSlice));
    if (s.is_fatal()) {
      *fatal = s;
      return false;
    }
    pause_assignment();
  }
  return true;
}

Status ConsumeLoop::publish_dead_letters(const std::vector<db::DeadLetter>& letters) {
  for (int attempt = 0;; ++attempt) {
    Status s = dead_letters_.publish(letters, Millis{5000});
    if (s || s.is_fatal()) return s;
    if (attempt == 0 || attempt % 10 == 0) {
      log::warn("dead-letter topic unavailable, retrying",
                {{"attempt", attempt + 1}, {"error", s.message()}});
    }
    Status fatal;
    if (!wait_polling(backoff(attempt), &fatal)) {
      return fatal.is_fatal() ? fatal : Status::transient("drain_deadline", "dead letters not published before the drain deadline");
    }
  }
}

Status ConsumeLoop::flush() {
  std::vector<ItemResult> results;
  std::vector<WorkItem> items;
  for (int attempt = 0;; ++attempt) {
    drop_revoked();
    if (batch_.empty()) break;
    items.clear();
    for (const auto& e : batch_) items.insert(items.end(), e.items.begin(), e.items.end());
    auto t0 = Clock::now();
    Status s = apply_batch(db_, items, projection_, &results);
    if (s) {
      metrics_.apply_seconds(std::chrono::duration<double>(Clock::now() - t0).count());
      if (attempt > 0) log::info("database back, batch applied", {{"attempts", attempt + 1}});
      break;
    }
    if (s.is_fatal()) return s;
    if (s.is_permanent()) {
      // apply_items turns every per-event failure into a dead letter, so a
      // permanent error here is outside any event (a bug or a schema
      // problem): retrying is the only way not to lose the batch.
      s = Status::transient(s.reason(), s.message());
    }
    if (attempt == 0 || attempt % 10 == 0) {
      log::warn("batch not applied, retrying", {{"attempt", attempt + 1},
                                                {"reason", s.reason()},
                                                {"error", s.message()},
                                                {"messages", static_cast<long>(batch_.size())}});
    }
    Status fatal;
    if (!wait_polling(backoff(attempt), &fatal)) {
      if (fatal.is_fatal()) return fatal;
      log::warn("drain deadline passed with a batch not applied; it will be redelivered",
                {{"messages", static_cast<long>(batch_.size())}});
      batch_.clear();
      next_.clear();
      resume_paused();
      return Status::ok();
    }
  }
  if (!batch_.empty()) {
    crash_point("after_db_commit");
    std::vector<db::DeadLetter> letters;
    for (size_t i = 0; i < items.size(); ++i) {
      const ItemResult& r = results[i];
      const Event* ev = items[i].item.event ? &*items[i].item.event : nullptr;
      metrics_.event(items[i].item.origin.topic, ev ? ev->type : "", outcome_label(r.outcome));
      if (r.outcome != Outcome::kDeadLetter) continue;
      if (r.new_dead_letter) metrics_.dead_letter(items[i].item.origin.topic, r.reason);
      db::DeadLetter dl;
      dl.origin = items[i].item.origin;
      dl.key = items[i].key;
      dl.payload = items[i].item.payload;
      dl.reason = r.reason;
      dl.error = r.error;
      log::warn("dead letter", {{"id", dl.origin.id()}, {"reason", r.reason}, {"error", r.error}});
      letters.push_back(std::move(dl));
    }
    if (!letters.empty()) {
      crash_point("after_dead_letter_row");
      Status s = publish_dead_letters(letters);
      if (s.is_fatal()) return s;
      if (!s) {
        // Deadline passed: do not store offsets; the rows are committed and
        // redelivery publishes again.
        batch_.clear();
        next_.clear();
        resume_paused();
        return Status::ok();
      }
    }
    std::map<queue::TopicPartition, std::int64_t> next_offsets;
    for (const auto& e : batch_) {
      auto& off = next_offsets[{e.msg.origin.topic, e.msg.origin.partition}];
      off = std::max(off, e.msg.origin.offset + 1);
    }
    if (Status s = consumer_.store_offsets(next_offsets); !s) {
      // The work is committed; a redelivery of it is harmless.
      log::warn("offset store failed", {{"error", s.message()}});
    }
    log::debug("batch applied", {{"messages", static_cast<long>(batch_.size())},
                                 {"items", static_cast<long>(items.size())}});
  }
  resume_paused();
  batch_ = std::move(next_);
  next_.clear();
  recount_batch_events();
  batch_started_ = Clock::now();
  return Status::ok();
}

Status ConsumeLoop::process_replays() {
  int replayed = 0, failed = 0;
  Status s = db_.transact([&](pqxx::work& tx) {
    replayed = failed = 0;
    for (const db::ReplayRequest& req : db::claim_replays(tx, kReplayBatch)) {
      queue::RawMessage msg =
          raw_message_from_dead_letter(req.origin, req.key, req.payload, req.headers_json);
      if (req.origin.element >= 0) msg.value = "[" + req.payload + "]";
      std::vector<WorkItem> items = decode_message(msg, config_, limits_);
      for (auto& w : items) w.item.origin = req.origin;
      std::vector<ItemResult> results;
      if (Status st = apply_items(tx, items, projection_, &results); !st) return st;
      auto bad = std::find_if(results.begin(), results.end(),
                              [](const ItemResult& r) { return r.outcome == Outcome::kDeadLetter; });
      if (bad == results.end()) {
        db::mark_replayed(tx, req.id);
        replayed++;
      } else {
        db::mark_replay_failed(tx, req.id, bad->reason, bad->error);
        failed++;
      }
    }
    return Status::ok();
  });
  if (s && (replayed > 0 || failed > 0)) {
    log::info("dead letters replayed", {{"applied", replayed}, {"failed_again", failed}});
  }
  return s;
}

Status ConsumeLoop::run() {
  const auto max_wait = config_.consumer.batch_max_wait;
  const size_t max_events = static_cast<size_t>(config_.consumer.batch_max_events);
  while (true) {
    lifecycle_.watchdog_ping();
    publish_lag_seconds();
    if (lifecycle_.take_reload() && on_reload_) on_reload_();
    if (lifecycle_.stop_requested()) {
      if (!drain_deadline_) {
        drain_deadline_ = Clock::now() + config_.consumer.drain_timeout;
        lifecycle_.notify_stopping();
      }
      crash_point("in_drain");
      Status s = flush();
      log::info("drained", {{"ok", s.is_ok()}});
      return s.is_fatal() ? s : Status::ok();
    }
    if (db_.reachable() && assignment_received_.load()) lifecycle_.notify_ready();

    Millis timeout = kPollSlice;
    if (!batch_.empty()) {
      auto waited = std::chrono::duration_cast<Millis>(Clock::now() - batch_started_);
      timeout = std::clamp(max_wait - waited, Millis{0}, kPollSlice);
    }
    if (Status s = poll_into(batch_, timeout); s.is_fatal()) return s;

    bool due = !batch_.empty() &&
               (batch_events_ >= max_events ||
                Clock::now() - batch_started_ >= max_wait);
    if (due) {
      if (Status s = flush(); !s) return s;
    }
    if (Clock::now() - last_replay_check_ >= kReplayInterval) {
      last_replay_check_ = Clock::now();
      if (Status s = process_replays(); !s && s.is_fatal()) return s;
      // Also the readiness probe's database check when idle.
      if (!db_.reachable()) (void)db_.connection();
    }
  }
}

}  // namespace crm
