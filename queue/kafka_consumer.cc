#include "queue/kafka_consumer.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>

#include <boost/json.hpp>

#include "daemon/core/time.h"
#include "daemon/logging.h"

namespace crm::queue {

Result<void*> make_rdkafka_conf(const std::map<std::string, std::string>& defaults,
                                const std::map<std::string, std::string>& properties,
                                const std::map<std::string, std::string>& required) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto* layer : {&defaults, &properties, &required}) {
    for (const auto& [k, v] : *layer) {
      if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        // librdkafka's message names the property and the problem; it does
        // not echo the value, but do not add it either.
        return Status::permanent("bad_kafka_property",
                                 "kafka.properties." + k + ": " + std::string(err));
      }
    }
  }
  return static_cast<void*>(conf);
}

struct KafkaConsumer::Impl {
  KafkaConsumer* owner = nullptr;
  rd_kafka_t* rk = nullptr;
  Callbacks callbacks;
  bool closed = false;
  bool abandoned = false;
  std::string fatal_message;

  static void rebalance_cb(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<Impl*>(opaque)->on_rebalance(rk, err, parts);
  }

  void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                    rd_kafka_topic_partition_list_t* parts) {
    const bool cooperative = std::string(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      for (int i = 0; i < parts->cnt; ++i) {
        owner->assigned_.insert({parts->elems[i].topic, parts->elems[i].partition});
        owner->revoked_.erase({parts->elems[i].topic, parts->elems[i].partition});
      }
      owner->assignment_received_ = true;
      log::info("partitions assigned", {{"count", parts->cnt},
                                        {"total", static_cast<long>(owner->assigned_.size())},
                                        {"protocol", cooperative ? "cooperative" : "eager"}});
      if (cooperative) {
        if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk, parts)) {
          log::error("incremental assign failed", {{"error", rd_kafka_error_string(e)}});
          rd_kafka_error_destroy(e);
        }
      } else {
        rd_kafka_assign(rk, parts);
      }
      return;
    }
    const bool lost = rd_kafka_assignment_lost(rk);
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
      // Commit what is finished before giving the partitions away, unless
      // they are already lost (someone else may own them: skip the commit).
      // Asynchronous, so a dead coordinator cannot stall the loop here; if
      // it does not land, the new owner re-reads events that
      // processed_events turns into no-ops.
      if (!lost) rd_kafka_commit(rk, nullptr, 1);
      for (int i = 0; i < parts->cnt; ++i) {
        TopicPartition tp{parts->elems[i].topic, parts->elems[i].partition};
        owner->assigned_.erase(tp);
        owner->revoked_.insert(tp);
      }
      log::info("partitions revoked", {{"count", parts->cnt}, {"lost", lost}});
      if (cooperative) {
        if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, parts)) {
          log::error("incremental unassign failed", {{"error", rd_kafka_error_string(e)}});
          rd_kafka_error_destroy(e);
        }
      } else {
        rd_kafka_assign(rk, nullptr);
      }
      return;
    }
    log::error("rebalance error, resetting assignment", {{"error", rd_kafka_err2str(err)}});
    for (const auto& tp : owner->assigned_) owner->revoked_.insert(tp);
    owner->assigned_.clear();
    rd_kafka_assign(rk, nullptr);
  }

  static int stats_cb(rd_kafka_t*, char* json, size_t len, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (!self->callbacks.on_lag) return 0;
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(std::string_view(json, len), ec);
    if (ec || !v.is_object()) return 0;
    std::vector<PartitionLag> lags;
    const auto* topics = v.get_object().if_contains("topics");
    if (topics == nullptr || !topics->is_object()) return 0;
    for (const auto& [tname, t] : topics->get_object()) {
      const auto* parts = t.is_object() ? t.get_object().if_contains("partitions") : nullptr;
      if (parts == nullptr || !parts->is_object()) continue;
      for (const auto& [pname, p] : parts->get_object()) {
        if (pname == "-1" || !p.is_object()) continue;  // the internal UA partition
        const auto& po = p.get_object();
        int32_t pid = static_cast<int32_t>(std::stol(std::string(pname)));
        if (!self->owner->is_assigned({std::string(tname), pid})) continue;
        const auto* lag = po.if_contains("consumer_lag");
        if (lag == nullptr || !lag->is_int64() || lag->as_int64() < 0) {
          // Nothing committed yet: fall back to the lag behind stored offsets.
          lag = po.if_contains("consumer_lag_stored");
        }
        if (lag == nullptr || !lag->is_int64() || lag->as_int64() < 0) continue;
        lags.push_back({std::string(tname), pid, lag->as_int64()});
      }
    }
    self->callbacks.on_lag(lags);
    return 0;
  }

  static void error_cb(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
      char buf[512];
      rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
      self->fatal_message = std::string(rd_kafka_err2name(orig)) + ": " + buf;
      log::error("kafka fatal error", {{"error", self->fatal_message}});
      return;
    }
    // Informational: librdkafka retries by itself (REFERENCE.md §5.5).
    log::warn("kafka error", {{"code", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err))},
                              {"reason", reason}});
  }

  static void log_cb(const rd_kafka_t*, int level, const char* fac, const char* buf) {
    if (level <= 3) log::error("librdkafka", {{"facility", fac}, {"message", buf}});
    else if (level <= 4) log::warn("librdkafka", {{"facility", fac}, {"message", buf}});
    else log::debug("librdkafka", {{"facility", fac}, {"message", buf}});
  }
};

KafkaConsumer::KafkaConsumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->owner = this;
}

KafkaConsumer::~KafkaConsumer() {
  close(Millis{10000});
  if (impl_->rk != nullptr) {
    // After an abandoned close, do not let destroy try to close again.
    rd_kafka_destroy_flags(impl_->rk, impl_->abandoned ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0);
  }
}

Result<std::unique_ptr<KafkaConsumer>> KafkaConsumer::create(const Config& config,
                                                             const std::string& bootstrap,
                                                             Callbacks callbacks) {
  const std::map<std::string, std::string> defaults = {
      {"auto.offset.reset", "earliest"},
      {"statistics.interval.ms", "5000"},
      {"enable.partition.eof", "false"},
      {"queued.max.messages.kbytes", "16384"},
      {"client.id", "crm-worker"},
  };
  const std::map<std::string, std::string> required = {
      {"bootstrap.servers", bootstrap},
      {"group.id", config.kafka.group_id},
      {"enable.auto.offset.store", "false"},
      {"enable.auto.commit", "true"},
  };
  auto conf = make_rdkafka_conf(defaults, config.kafka.properties, required);
  if (!conf) return conf.status();
  auto* c = static_cast<rd_kafka_conf_t*>(*conf);

  auto impl = std::make_unique<Impl>();
  impl->callbacks = std::move(callbacks);
  rd_kafka_conf_set_opaque(c, impl.get());
  rd_kafka_conf_set_rebalance_cb(c, &Impl::rebalance_cb);
  rd_kafka_conf_set_stats_cb(c, &Impl::stats_cb);
  rd_kafka_conf_set_error_cb(c, &Impl::error_cb);
  rd_kafka_conf_set_log_cb(c, &Impl::log_cb);

  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(c);
    return Status::permanent("kafka_client", std::string("cannot create consumer: ") + err);
  }
  rd_kafka_poll_set_consumer(rk);
  impl->rk = rk;
  return std::unique_ptr<KafkaConsumer>(new KafkaConsumer(std::move(impl)));
}

Status KafkaConsumer::subscribe(const std::vector<std::string>& topics) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(topics.size()));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(list, t.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(impl_->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::fatal("kafka_subscribe", std::string("subscribe failed: ") + rd_kafka_err2str(err));
  }
  return Status::ok();
}

Result<std::optional<RawMessage>> KafkaConsumer::poll(Millis timeout) {
  if (!impl_->fatal_message.empty()) return Status::fatal("kafka_fatal", impl_->fatal_message);
  rd_kafka_message_t* m = rd_kafka_consumer_poll(impl_->rk, static_cast<int>(timeout.count()));
  if (!impl_->fatal_message.empty()) {
    if (m) rd_kafka_message_destroy(m);
    return Status::fatal("kafka_fatal", impl_->fatal_message);
  }
  if (m == nullptr) return std::optional<RawMessage>{};
  std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> guard(m, rd_kafka_message_destroy);
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
      char buf[512];
      rd_kafka_fatal_error(impl_->rk, buf, sizeof buf);
      impl_->fatal_message = buf;
      return Status::fatal("kafka_fatal", buf);
    }
    // Consumer errors (e.g. partition EOF, transport) are informational.
    log::warn("kafka consume error", {{"code", rd_kafka_err2name(m->err)},
                                      {"reason", rd_kafka_message_errstr(m)}});
    return std::optional<RawMessage>{};
  }
  RawMessage raw;
  raw.origin.topic = rd_kafka_topic_name(m->rkt);
  raw.origin.partition = m->partition;
  raw.origin.offset = m->offset;
  rd_kafka_timestamp_type_t timestamp_type;
  raw.timestamp_ms = rd_kafka_message_timestamp(m, &timestamp_type);
  if (raw.timestamp_ms < 0) raw.timestamp_ms = now_timestamp().micros_since_epoch / 1000;
  if (m->key != nullptr) raw.key = std::string(static_cast<const char*>(m->key), m->key_len);
  if (m->payload != nullptr) raw.value = std::string(static_cast<const char*>(m->payload), m->len);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != nullptr) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
      std::optional<std::string> v;
      if (value != nullptr) v = std::string(static_cast<const char*>(value), size);
      raw.headers.emplace_back(name, std::move(v));
    }
  }
  return std::optional<RawMessage>{std::move(raw)};
}

Status KafkaConsumer::store_offsets(const std::map<TopicPartition, std::int64_t>& next_offsets) {
  if (next_offsets.empty()) return Status::ok();
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size()));
  for (const auto& [tp, off] : next_offsets) {
    if (!is_assigned(tp)) continue;
    rd_kafka_topic_partition_list_add(list, tp.first.c_str(), tp.second)->offset = off;
  }
  if (list->cnt == 0) {
    rd_kafka_topic_partition_list_destroy(list);
    return Status::ok();
  }
  rd_kafka_resp_err_t err = rd_kafka_offsets_store(impl_->rk, list);
  Status result;
  for (int i = 0; i < list->cnt; ++i) {
    // __STATE: the partition was revoked in the meantime. Its work is
    // committed in the database, so the new owner will skip it as duplicates.
    if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR &&
        list->elems[i].err != RD_KAFKA_RESP_ERR__STATE) {
      result = Status::transient("offset_store", rd_kafka_err2str(list->elems[i].err));
    }
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__STATE && result) {
    result = Status::transient("offset_store", rd_kafka_err2str(err));
  }
  rd_kafka_topic_partition_list_destroy(list);
  return result;
}

namespace {
rd_kafka_topic_partition_list_t* to_list(const std::set<TopicPartition>& tps) {
  auto* list = rd_kafka_topic_partition_list_new(static_cast<int>(tps.size()));
  for (const auto& tp : tps) rd_kafka_topic_partition_list_add(list, tp.first.c_str(), tp.second);
  return list;
}
}  // namespace

void KafkaConsumer::pause(const std::set<TopicPartition>& tps) {
  if (tps.empty()) return;
  auto* list = to_list(tps);
  rd_kafka_pause_partitions(impl_->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
}

void KafkaConsumer::resume(const std::set<TopicPartition>& tps) {
  if (tps.empty()) return;
  auto* list = to_list(tps);
  rd_kafka_resume_partitions(impl_->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
}

std::set<TopicPartition> KafkaConsumer::take_revoked() {
  std::set<TopicPartition> out;
  out.swap(revoked_);
  return out;
}

void KafkaConsumer::close(Millis deadline) {
  if (impl_->closed || impl_->rk == nullptr) return;
  impl_->closed = true;
  // rd_kafka_consumer_close() can block for as long as the coordinator is
  // unreachable; the queue-based close lets us stop waiting at the drain
  // deadline. Rebalance events arrive on the queue and are served here.
  rd_kafka_queue_t* q = rd_kafka_queue_new(impl_->rk);
  if (rd_kafka_error_t* e = rd_kafka_consumer_close_queue(impl_->rk, q)) {
    log::warn("consumer close", {{"error", rd_kafka_error_string(e)}});
    rd_kafka_error_destroy(e);
  }
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!rd_kafka_consumer_closed(impl_->rk)) {
    auto left = std::chrono::duration_cast<Millis>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      log::warn("consumer close did not finish before the deadline; leaving anyway");
      impl_->abandoned = true;
      break;
    }
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, static_cast<int>(std::min<long>(left.count(), 100)));
    if (ev == nullptr) continue;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
      impl_->on_rebalance(impl_->rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev));
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
}

}  // namespace crm::queue
