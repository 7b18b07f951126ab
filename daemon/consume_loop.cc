#include "daemon/consume_loop.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <thread>
#include <unordered_map>

#include <unistd.h>

#include "daemon/core/backoff.h"
#include "daemon/core/crash_point.h"
#include "daemon/logging.h"
#include "db/consume_guard.h"
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
// A batch is applied once its raw messages reach this size, whatever their
// number (a SendGrid message may hold thousands of events; the transaction
// is then cut at batch_max_events).
constexpr size_t kBatchMaxBytes = 8u << 20;
// A chunk is split into lanes from this many events: a small one (a
// trickle) gains nothing from it and pays the extra round trips (the lane
// split's read, a release of its own) in latency.
constexpr size_t kMinLaneEvents = 64;
// How long a flush goes on applying before it yields (see flush()).
constexpr Millis kFlushSlice{1000};

queue::TopicPartition partition_of(const queue::RawMessage& m) {
  return {m.origin.topic, m.origin.partition};
}

// Random, so that a restarted process with a recycled pid is another worker.
std::string new_worker_id() {
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%d-%08x%08x", static_cast<int>(::getpid()), rd(), rd());
  return buf;
}

// The dead letter of a message that kills workers: the whole message, not
// decoded again.
WorkItem crashed_worker_item(const queue::RawMessage& msg, const std::string& error) {
  queue::DecodedItem d;
  d.origin = msg.origin;
  d.origin.element = -1;
  d.error = Status::permanent("crashed_worker", error);
  d.payload = msg.value.value_or("");
  return WorkItem{std::move(d), msg.key, headers_to_json(msg)};
}

const char* outcome_label(Outcome o) {
  switch (o) {
    case Outcome::kApplied: return "applied";
    case Outcome::kDuplicate: return "duplicate";
    case Outcome::kDeadLetter: return "dead_letter";
  }
  return "applied";
}

std::string crashes_text(int crashes) {
  return "a worker died " + std::to_string(crashes) +
         " times while applying this message on its own; it is not decoded again";
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
  for (auto& d : decoded) {
    if (d.event) crash_on_event(d.event->id);
    out.push_back(WorkItem{std::move(d), msg.key, headers});
  }
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
      projection_(db::projection_options(config)),
      worker_id_(new_worker_id()) {
  for (int i = 1; i < config.database.pool_size; ++i) {
    lanes_.push_back(std::make_unique<db::Database>(db.conninfo()));
  }
}

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
  // Decoded only once the batch is guarded: a decoder that dies on it is
  // a crash like any other.
  Entry e;
  e.msg = std::move(msg);
  if (&into == &batch_) {
    if (batch_.empty()) batch_started_ = Clock::now();
    batch_bytes_ += e.msg.value ? e.msg.value->size() : 0;
  }
  into.push_back(std::move(e));
  return Status::ok();
}

void ConsumeLoop::recount_batch_bytes() {
  batch_bytes_ = 0;
  for (const auto& e : batch_) batch_bytes_ += e.msg.value ? e.msg.value->size() : 0;
}

void ConsumeLoop::drop_revoked() {
  std::set<queue::TopicPartition> revoked = consumer_.take_revoked();
  if (revoked.empty()) return;
  auto gone = [&](const Entry& e) { return revoked.count(partition_of(e.msg)) != 0; };
  // Given up alive: this worker's ranges and counts there go (if it holds any).
  std::set<queue::TopicPartition> mine;
  for (const auto& tp : own_partitions()) {
    if (revoked.count(tp)) mine.insert(tp);
  }
  size_t before = batch_.size() + next_.size();
  std::erase_if(batch_, gone);
  std::erase_if(next_, gone);
  recount_batch_bytes();
  for (const auto& tp : revoked) {
    // Looked up again if they come back: another worker may have died on them.
    solo_ranges_.erase(tp);
    unreleased_.erase(tp);
    ahead_.erase(tp);
  }
  if (!mine.empty()) give_up(mine);
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

void ConsumeLoop::decode(Entry& e) {
  if (e.decoded) return;
  if (e.crashed_before) {
    e.items = {crashed_worker_item(e.msg, "redelivered after workers died applying it; not decoded again")};
  } else {
    e.items = decode_message(e.msg, config_, limits_);
  }
  e.decoded = true;
}

Status ConsumeLoop::settle_forgets() {
  if (forget_.empty()) return Status::ok();
  Status s = db_.transact([&](pqxx::work& tx) {
    for (const auto& [tp, offset] : forget_) {
      db::forget_solo(tx, config_.kafka.group_id, tp.first, tp.second, offset, worker_id_);
    }
    return Status::ok();
  });
  if (s) forget_.clear();
  return s;
}

void ConsumeLoop::give_up(const std::set<queue::TopicPartition>& partitions) {
  for (auto it = held_.begin(); it != held_.end();) {
    if (partitions.count(it->first)) {
      forget_.insert(*it);
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
  // Not dying on a message says nothing against it. If the database is
  // down now, the counts are taken back at the next step, and the ranges
  // only make the next owner apply them one at a time.
  std::vector<db::OffsetRange> mine;
  for (const auto& tp : partitions) mine.push_back({tp.first, tp.second, 0, 0});
  Status s = db_.transact([&](pqxx::work& tx) {
    db::drop_inflight(tx, config_.kafka.group_id, worker_id_, mine);
    return Status::ok();
  });
  if (s) s = settle_forgets();
  if (!s) log::warn("could not give up this worker's guard rows yet", {{"error", s.message()}});
}

Status ConsumeLoop::learn_unreleased() {
  // The lowest offset delivered of each partition not looked up since it
  // was assigned: where its fetch began, below which all is applied.
  std::map<queue::TopicPartition, std::int64_t> unknown;
  for (const Entry& e : batch_) {
    auto tp = partition_of(e.msg);
    if (solo_ranges_.count(tp)) continue;
    auto [it, fresh] = unknown.emplace(tp, e.msg.origin.offset);
    it->second = std::min(it->second, e.msg.origin.offset);
  }
  if (unknown.empty()) return Status::ok();
  std::vector<db::OffsetRange> from;
  for (const auto& [tp, offset] : unknown) from.push_back({tp.first, tp.second, offset, 0});
  std::vector<db::OffsetRange> left;
  Status s = db_.transact([&](pqxx::work& tx) {
    left = db::unreleased(tx, config_.kafka.group_id, from);
    return Status::ok();
  });
  if (!s) return s;
  for (const auto& [tp, offset] : unknown) solo_ranges_[tp];
  for (const auto& r : left) {
    solo_ranges_[{r.topic, r.partition}].push_back({r.first, r.last});
    log::warn("offsets a worker began and never finished: applying them one message at a time",
              {{"topic", r.topic}, {"partition", r.partition}, {"first", r.first}, {"last", r.last}});
  }
  return Status::ok();
}

bool ConsumeLoop::solo(const Entry& e) const {
  auto it = solo_ranges_.find(partition_of(e.msg));
  if (it == solo_ranges_.end()) return false;
  const std::int64_t offset = e.msg.origin.offset;
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const auto& r) { return offset >= r.first && offset <= r.second; });
}

void ConsumeLoop::take_applied(size_t first, size_t count, std::vector<WorkItem> items,
                               std::vector<ItemResult> results, Applied& done) {
  std::vector<size_t> indices(count);
  std::iota(indices.begin(), indices.end(), first);
  take_entries(indices, std::move(items), std::move(results), done);
}

void ConsumeLoop::take_entries(const std::vector<size_t>& indices, std::vector<WorkItem> items,
                               std::vector<ItemResult> results, Applied& done) {
  std::vector<bool> taken(batch_.size(), false);
  for (size_t i : indices) {
    const auto& origin = batch_[i].msg.origin;
    const queue::TopicPartition tp{origin.topic, origin.partition};
    auto& off = done.next_offsets[tp];
    off = std::max(off, origin.offset + 1);
    done.failed.erase({tp, origin.offset});
    taken[i] = true;
  }
  done.messages += indices.size();
  std::move(items.begin(), items.end(), std::back_inserter(done.items));
  std::move(results.begin(), results.end(), std::back_inserter(done.results));
  std::vector<Entry> left;
  left.reserve(batch_.size() - indices.size());
  for (size_t i = 0; i < batch_.size(); ++i) {
    if (!taken[i]) left.push_back(std::move(batch_[i]));
  }
  batch_ = std::move(left);
  recount_batch_bytes();
}

Status ConsumeLoop::apply_solo(size_t index, Applied& done) {
  Entry& e = batch_[index];
  const auto key = std::pair{partition_of(e.msg), e.msg.origin.offset};
  const auto& [tp, offset] = key;
  // Counted, and committed, before the message is decoded: if it kills
  // this worker, the next one knows. Held from before the call, so that a
  // count committed in doubt is taken back too.
  held_.insert(key);
  db::SoloStart start;
  Status s = db_.transact([&](pqxx::work& tx) {
    db::set_async_commit(tx);
    start = db::begin_solo(tx, config_.kafka.group_id, tp.first, tp.second, offset, worker_id_);
    return Status::ok();
  });
  auto let_go = [&] {
    if (held_.erase(key)) forget_.insert(key);
  };
  if (!s) {
    let_go();
    return s;
  }
  if (start.crashed_before) {
    held_.erase(key);  // nothing was written
    e.crashed_before = true;
  }
  const bool give_up = !start.crashed_before && start.crashes >= config_.consumer.crash_attempts;
  std::vector<WorkItem> items;
  if (give_up) {
    items.push_back(crashed_worker_item(e.msg, crashes_text(start.crashes)));
  } else {
    decode(e);
    items = e.items;
  }
  std::vector<ItemResult> results;
  const auto t0 = Clock::now();
  s = db_.transact([&](pqxx::work& tx) {
    db::release_inflight(tx, config_.kafka.group_id, {{tp.first, tp.second, offset, offset}});
    return apply_items(tx, items, projection_, &results);
  });
  if (!s) {
    // Not a death: the count is taken back before the next try, which
    // counts again.
    let_go();
    return s;
  }
  held_.erase(key);  // the release took every count of it
  metrics_.apply_seconds(std::chrono::duration<double>(Clock::now() - t0).count());
  if (give_up) {
    log::error("message dead-lettered: workers died applying it",
               {{"id", e.msg.origin.id()}, {"crashes", start.crashes}});
  } else if (start.crashes > 0) {
    log::info("applied on its own a message workers had died on",
              {{"id", e.msg.origin.id()}, {"crashes", start.crashes}});
  }
  take_applied(index, 1, std::move(items), std::move(results), done);
  return Status::ok();
}

std::set<queue::TopicPartition> ConsumeLoop::own_partitions() const {
  std::set<queue::TopicPartition> mine;
  for (const Entry& e : batch_) {
    if (e.recorded) mine.insert(partition_of(e.msg));
  }
  for (const auto& [tp, offset] : held_) mine.insert(tp);
  for (const auto& [tp, range] : unreleased_) mine.insert(tp);
  for (const auto& [tp, offset] : ahead_) mine.insert(tp);
  return mine;
}

namespace {

// Widens `ranges` to hold m's offset in its partition.
void widen(std::map<queue::TopicPartition, std::pair<std::int64_t, std::int64_t>>& ranges,
           const queue::RawMessage& m) {
  auto [it, fresh] = ranges.emplace(partition_of(m), std::pair{m.origin.offset, m.origin.offset});
  it->second.first = std::min(it->second.first, m.origin.offset);
  it->second.second = std::max(it->second.second, m.origin.offset);
}

std::vector<db::OffsetRange> as_rows(
    const std::map<queue::TopicPartition, std::pair<std::int64_t, std::int64_t>>& ranges) {
  std::vector<db::OffsetRange> rows;
  for (const auto& [tp, r] : ranges) rows.push_back({tp.first, tp.second, r.first, r.second});
  return rows;
}

}  // namespace

Status ConsumeLoop::apply_chunk(Applied& done) {
  // Record what the batch holds before anything of it is decoded.
  Ranges ranges;
  for (const Entry& e : batch_) {
    if (!e.guarded) widen(ranges, e.msg);
  }
  if (!ranges.empty()) {
    // Before the record: a commit whose answer is lost may still have
    // written the row.
    for (Entry& e : batch_) e.recorded = true;
    const std::vector<db::OffsetRange> rows = as_rows(ranges);
    std::vector<db::OffsetRange> crashed;
    Status s = db_.transact([&](pqxx::work& tx) {
      db::set_async_commit(tx);
      crashed = db::record_inflight(tx, config_.kafka.group_id, worker_id_, rows);
      return Status::ok();
    });
    if (!s) return s;
    std::set<std::pair<queue::TopicPartition, std::int64_t>> skip;
    for (const auto& c : crashed) skip.insert({{c.topic, c.partition}, c.first});
    for (Entry& e : batch_) {
      if (!e.guarded && skip.count({partition_of(e.msg), e.msg.origin.offset})) e.crashed_before = true;
      e.guarded = true;
    }
  }
  // One transaction holds at most batch_max_events events (and at least
  // one message).
  const size_t max_events = static_cast<size_t>(config_.consumer.batch_max_events);
  size_t count = 0, events = 0;
  while (count < batch_.size()) {
    decode(batch_[count]);
    const size_t n = batch_[count].items.size();
    if (count > 0 && events + n > max_events) break;
    events += n;
    ++count;
  }
  if (!lanes_.empty() && count > 1 && events >= kMinLaneEvents) {
    const std::vector<std::vector<size_t>> lanes = split_lanes(count);
    if (lanes.size() > 1) return apply_lanes(lanes, done);
  }
  std::vector<WorkItem> items;
  items.reserve(events);
  // With the ranges an earlier release left (they end where these begin).
  Ranges applied = unreleased_;
  for (size_t i = 0; i < count; ++i) {
    const Entry& e = batch_[i];
    items.insert(items.end(), e.items.begin(), e.items.end());
    widen(applied, e.msg);
  }
  const std::set<queue::TopicPartition> caught_up =
      extend_past_gaps(applied, [&](size_t i) { return i >= count; });
  const std::vector<db::OffsetRange> release = as_rows(applied);
  std::vector<ItemResult> results;
  const auto t0 = Clock::now();
  Status s = db_.transact([&](pqxx::work& tx) {
    db::release_inflight(tx, config_.kafka.group_id, release);
    return apply_items(tx, items, projection_, &results);
  });
  if (!s) {
    // Recorded again before the next try (the same union): a record
    // committed asynchronously may have died with the server.
    for (Entry& e : batch_) e.guarded = false;
    return s;
  }
  metrics_.apply_seconds(std::chrono::duration<double>(Clock::now() - t0).count());
  unreleased_.clear();
  for (const auto& tp : caught_up) ahead_.erase(tp);
  take_applied(0, count, std::move(items), std::move(results), done);
  return Status::ok();
}

std::set<queue::TopicPartition> ConsumeLoop::extend_past_gaps(Ranges& release,
                                                               const std::function<bool(size_t)>& left) const {
  std::set<queue::TopicPartition> caught_up;
  if (ahead_.empty()) return caught_up;
  // The lowest offset of each partition still to apply: everything of the
  // partition below it was applied, now or in an earlier round.
  std::map<queue::TopicPartition, std::int64_t> lowest_left;
  for (size_t i = 0; i < batch_.size(); ++i) {
    if (!left(i)) continue;
    auto [it, fresh] = lowest_left.emplace(partition_of(batch_[i].msg), batch_[i].msg.origin.offset);
    if (!fresh) it->second = std::min(it->second, batch_[i].msg.origin.offset);
  }
  for (const auto& [tp, ahead] : ahead_) {
    auto it = release.find(tp);
    if (it == release.end()) continue;  // nothing of its gap was applied
    auto low = lowest_left.find(tp);
    if (low == lowest_left.end() || low->second > ahead) {
      it->second.second = std::max(it->second.second, ahead);
      caught_up.insert(tp);
    } else {
      // Up to the next message to apply, so that the row starts where the
      // release of that message will.
      it->second.second = std::max(it->second.second, low->second - 1);
    }
  }
  return caught_up;
}

std::vector<std::vector<size_t>> ConsumeLoop::split_lanes(size_t count) {
  // Messages that share a key, or a key their later lock rounds would
  // reach (the prospect of an email a SendGrid event names), are in one
  // group (union-find).
  std::vector<size_t> parent(count);
  std::iota(parent.begin(), parent.end(), size_t{0});
  auto root = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  std::unordered_map<std::string, size_t> first_with;
  auto join = [&](const std::string& key, size_t i) {
    auto [it, fresh] = first_with.emplace(key, i);
    if (!fresh) parent[root(i)] = root(it->second);
  };
  std::set<std::string> keys;
  for (size_t i = 0; i < count; ++i) {
    for (const WorkItem& w : batch_[i].items) {
      for (const std::string& key : conflict_keys(w)) {
        join(key, i);
        keys.insert(key);
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> related;
  Status read = db_.transact([&](pqxx::work& tx) {
    related = db::related_lock_keys(tx, keys);
    return Status::ok();
  });
  if (!read) return {};  // the apply meets the same trouble, and retries
  // Twice: a key may lead to one that leads on (message -> email -> prospect).
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& [key, to] : related) {
      auto it = first_with.find(key);
      if (it != first_with.end()) join(to, it->second);
    }
  }
  std::map<size_t, std::vector<size_t>> groups;  // by root
  for (size_t i = 0; i < count; ++i) groups[root(i)].push_back(i);
  const size_t n = std::min(lanes_.size() + 1, groups.size());
  if (n < 2) return {};
  // The heaviest group first, each into the lane with the fewest events.
  std::vector<std::pair<size_t, const std::vector<size_t>*>> by_weight;
  for (const auto& [r, members] : groups) {
    size_t weight = 0;
    for (size_t i : members) weight += std::max<size_t>(1, batch_[i].items.size());
    by_weight.push_back({weight, &members});
  }
  std::stable_sort(by_weight.begin(), by_weight.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::vector<size_t>> lanes(n);
  std::vector<size_t> load(n, 0);
  for (const auto& [weight, members] : by_weight) {
    const size_t l = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    lanes[l].insert(lanes[l].end(), members->begin(), members->end());
    load[l] += weight;
  }
  for (auto& lane : lanes) std::sort(lane.begin(), lane.end());
  return lanes;
}

Status ConsumeLoop::apply_lanes(const std::vector<std::vector<size_t>>& lanes, Applied& done) {
  struct Lane {
    std::vector<WorkItem> items;
    std::vector<ItemResult> results;
    Status status;
    double seconds = 0;
  };
  std::vector<Lane> out(lanes.size());
  size_t count = 0;
  for (size_t l = 0; l < lanes.size(); ++l) {
    for (size_t i : lanes[l]) {
      out[l].items.insert(out[l].items.end(), batch_[i].items.begin(), batch_[i].items.end());
      count = std::max(count, i + 1);
    }
  }
  auto run = [&](size_t l, db::Database& db) {
    const auto t0 = Clock::now();
    try {
      out[l].status = db.transact(
          [&](pqxx::work& tx) { return apply_items(tx, out[l].items, projection_, &out[l].results); });
    } catch (...) {
      out[l].status = db::classify_exception(std::current_exception());
    }
    out[l].seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  };
  std::vector<std::thread> threads;
  for (size_t l = 1; l < lanes.size(); ++l) {
    try {
      threads.emplace_back(run, l, std::ref(*lanes_[l - 1]));
    } catch (...) {
      run(l, *lanes_[l - 1]);  // no thread to be had: one after the other
    }
  }
  run(0, db_);
  for (auto& t : threads) t.join();

  Status failure = Status::ok();
  std::vector<bool> applied(count, false);
  std::vector<size_t> taken;
  std::vector<WorkItem> items;
  std::vector<ItemResult> results;
  for (size_t l = 0; l < lanes.size(); ++l) {
    if (!out[l].status) {
      if (failure.is_ok() || out[l].status.is_fatal()) failure = out[l].status;
      for (size_t i : lanes[l]) done.failed.insert({partition_of(batch_[i].msg), batch_[i].msg.origin.offset});
      continue;
    }
    metrics_.apply_seconds(out[l].seconds);
    for (size_t i : lanes[l]) applied[i] = true;
    taken.insert(taken.end(), lanes[l].begin(), lanes[l].end());
    std::move(out[l].items.begin(), out[l].items.end(), std::back_inserter(items));
    std::move(out[l].results.begin(), out[l].results.end(), std::back_inserter(results));
  }
  // The guard's ranges go as far as each partition is applied without a
  // gap, in a transaction of their own (the lanes committed apart).
  std::set<queue::TopicPartition> gap;
  for (size_t i = 0; i < count; ++i) {
    const queue::TopicPartition tp = partition_of(batch_[i].msg);
    if (!applied[i]) {
      gap.insert(tp);
    } else if (!gap.count(tp)) {
      widen(unreleased_, batch_[i].msg);
    } else {
      std::int64_t& ahead = ahead_[tp];
      ahead = std::max(ahead, batch_[i].msg.origin.offset);
    }
  }
  // Offsets applied past a gap that is filled now (by this chunk).
  auto left = [&](size_t i) { return i >= count || !applied[i]; };
  for (const auto& tp : extend_past_gaps(unreleased_, left)) ahead_.erase(tp);
  if (!unreleased_.empty()) {
    const std::vector<db::OffsetRange> release = as_rows(unreleased_);
    Status s = db_.transact([&](pqxx::work& tx) {
      db::set_async_commit(tx);
      db::release_inflight(tx, config_.kafka.group_id, release);
      return Status::ok();
    });
    // Applied is applied: a release that failed goes with the next chunk's.
    if (s) unreleased_.clear();
  }
  if (!failure) {
    // Recorded again before the next try, as in apply_chunk.
    for (Entry& e : batch_) e.guarded = false;
  }
  std::sort(taken.begin(), taken.end());
  take_entries(taken, std::move(items), std::move(results), done);
  return failure;
}

Status ConsumeLoop::apply_step(Applied& done) {
  if (Status s = settle_forgets(); !s) return s;
  if (Status s = learn_unreleased(); !s) return s;
  for (size_t i = 0; i < batch_.size(); ++i) {
    if (solo(batch_[i])) return apply_solo(i, done);
  }
  return apply_chunk(done);
}

Status ConsumeLoop::flush() {
  Applied done;
  const auto started = Clock::now();
  for (int attempt = 0;;) {
    drop_revoked();
    if (batch_.empty()) break;
    // A batch applied one message at a time, or cut into many
    // transactions, yields now and then: what is done is published and its
    // offsets stored, the loop polls (the group and the watchdog hear from
    // it), and the rest is the next batch.
    if (done.messages > 0 && (Clock::now() - started >= kFlushSlice || drain_expired())) break;
    Status s = apply_step(done);
    if (s) {
      lifecycle_.watchdog_ping();
      if (attempt > 0) log::info("database back, batch applied", {{"attempts", attempt + 1}});
      attempt = 0;
      continue;
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
    if (!wait_polling(backoff(attempt++), &fatal)) {
      if (fatal.is_fatal()) return fatal;
      // What was committed is redelivered as duplicates (its dead letters
      // published again then).
      log::warn("drain deadline passed with a batch not applied; it will be redelivered",
                {{"messages", static_cast<long>(batch_.size())}});
      give_up(own_partitions());
      batch_.clear();
      next_.clear();
      recount_batch_bytes();
      resume_paused();
      return Status::ok();
    }
  }
  if (done.messages > 0) {
    crash_point("after_db_commit");
    std::vector<db::DeadLetter> letters;
    for (size_t i = 0; i < done.items.size(); ++i) {
      const WorkItem& w = done.items[i];
      const ItemResult& r = done.results[i];
      const Event* ev = w.item.event ? &*w.item.event : nullptr;
      metrics_.event(w.item.origin.topic, ev ? ev->type : "", outcome_label(r.outcome));
      if (r.outcome != Outcome::kDeadLetter) continue;
      if (r.new_dead_letter) metrics_.dead_letter(w.item.origin.topic, r.reason);
      db::DeadLetter dl;
      dl.origin = w.item.origin;
      dl.key = w.key;
      dl.payload = w.item.payload;
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
        recount_batch_bytes();
        resume_paused();
        return Status::ok();
      }
    }
    // Not at or past a message a lane failed on and nothing applied since.
    for (const auto& [tp, offset] : done.failed) {
      auto it = done.next_offsets.find(tp);
      if (it != done.next_offsets.end()) it->second = std::min(it->second, offset);
    }
    if (Status s = consumer_.store_offsets(done.next_offsets); !s) {
      // The work is committed; a redelivery of it is harmless.
      log::warn("offset store failed", {{"error", s.message()}});
    }
    log::debug("batch applied", {{"messages", static_cast<long>(done.messages)},
                                 {"items", static_cast<long>(done.items.size())}});
  }
  resume_paused();
  // What is left of a batch cut short goes first (and is due at once);
  // what arrived meanwhile follows, unless the worker is draining: then
  // only the work in flight is finished.
  const bool leftovers = !batch_.empty();
  if (!drain_deadline_) std::move(next_.begin(), next_.end(), std::back_inserter(batch_));
  next_.clear();
  recount_batch_bytes();
  if (!leftovers) batch_started_ = Clock::now();
  return Status::ok();
}

Status ConsumeLoop::replay_one(pqxx::transaction_base& tx, const db::ReplayRequest& req, bool* applied) {
  queue::RawMessage msg = raw_message_from_dead_letter(req.origin, req.key, req.payload, req.headers_json);
  if (req.origin.element >= 0) msg.value = "[" + req.payload + "]";
  std::vector<WorkItem> items = decode_message(msg, config_, limits_);
  for (auto& w : items) w.item.origin = req.origin;
  std::vector<ItemResult> results;
  if (Status st = apply_items(tx, items, projection_, &results); !st) return st;
  auto bad = std::find_if(results.begin(), results.end(),
                          [](const ItemResult& r) { return r.outcome == Outcome::kDeadLetter; });
  *applied = bad == results.end();
  if (*applied) {
    db::mark_replayed(tx, req);
  } else {
    db::mark_replay_failed(tx, req.id, bad->reason, bad->error);
  }
  return Status::ok();
}

Status ConsumeLoop::process_replays() {
  // Claimed (and marked begun) in a transaction of their own before any of
  // them is decoded: a replay that kills the worker stays a dead letter
  // rather than killing every worker after it. Dead letters that killed
  // workers once already are replayed one at a time.
  std::vector<db::ReplayRequest> claimed;
  Status s = db_.transact([&](pqxx::work& tx) {
    claimed = db::claim_replays(tx, kReplayBatch, false);
    if (claimed.empty()) claimed = db::claim_replays(tx, 1, true);
    return Status::ok();
  });
  if (!s || claimed.empty()) return s;
  int replayed = 0, failed = 0;
  s = db_.transact([&](pqxx::work& tx) {
    replayed = failed = 0;
    for (const db::ReplayRequest& req : claimed) {
      bool applied = false;
      if (Status st = replay_one(tx, req, &applied); !st) return st;
      (applied ? replayed : failed)++;
    }
    return Status::ok();
  });
  if (!s) {
    Status back = db_.transact([&](pqxx::work& tx) {
      for (const db::ReplayRequest& req : claimed) db::unclaim_replay(tx, req);
      return Status::ok();
    });
    if (!back) {
      log::warn("replays that did not happen could not be requested again; request them again",
                {{"dead_letters", static_cast<long>(claimed.size())}, {"error", back.message()}});
    }
    return s;
  }
  log::info("dead letters replayed", {{"applied", replayed}, {"failed_again", failed}});
  return Status::ok();
}

Status ConsumeLoop::run() {
  const auto max_wait = config_.consumer.batch_max_wait;
  const size_t max_messages = static_cast<size_t>(config_.consumer.batch_max_events);
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
      Status s = Status::ok();
      while (s && !batch_.empty() && !drain_expired()) s = flush();
      if (!batch_.empty() || !held_.empty() || !unreleased_.empty() || !ahead_.empty()) {
        // Stopping alive with work left: it is redelivered, and no one
        // should take it for a death.
        give_up(own_partitions());
      }
      log::info("drained", {{"ok", s.is_ok()}});
      return s.is_fatal() ? s : Status::ok();
    }
    if (db_.reachable() && assignment_received_.load()) lifecycle_.notify_ready();

    // A batch takes what has been fetched, without waiting, until it is
    // full or nothing more is waiting; then it lingers batch_max_wait (0 by
    // default) for more. So a backlog goes in full batches and a trickle is
    // applied at once: the batches grow with the load, by themselves.
    Millis timeout = kPollSlice;
    if (!batch_.empty()) {
      auto waited = std::chrono::duration_cast<Millis>(Clock::now() - batch_started_);
      timeout = std::clamp(max_wait - waited, Millis{0}, kPollSlice);
    }
    const size_t before = batch_.size();
    if (Status s = poll_into(batch_, timeout); s.is_fatal()) return s;
    const bool dry = batch_.size() == before;

    bool due = !batch_.empty() &&
               (batch_.size() >= max_messages || batch_bytes_ >= kBatchMaxBytes ||
                (dry && Clock::now() - batch_started_ >= max_wait));
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
