#include "monitoring/probes.h"

#include <prometheus/gauge.h>

namespace crm::monitoring {

const std::set<std::string>& dead_letter_reasons() {
  static const std::set<std::string> kReasons = {
      "empty",        "too_large",       "too_deep",   "not_json",    "invalid_utf8",
      "nul_in_string", "not_object",     "bad_specversion", "missing_field", "wrong_type",
      "bad_time",     "bad_headers",     "not_array",  "too_many_elements", "unknown_type",
      "duplicate_key",
      "db_rejected",  "internal",
  };
  return kReasons;
}

Metrics::Metrics(std::vector<std::string> topics, std::vector<std::string> event_types)
    : registry_(std::make_shared<prometheus::Registry>()),
      topics_(topics.begin(), topics.end()),
      types_(event_types.begin(), event_types.end()) {
  events_ = &prometheus::BuildCounter()
                 .Name("crm_worker_events_total")
                 .Help("Events consumed, by topic, type and outcome (applied, duplicate, dead_letter).")
                 .Register(*registry_);
  dead_letters_ = &prometheus::BuildCounter()
                       .Name("crm_worker_dead_letters_total")
                       .Help("Messages or elements sent to the dead letters, by topic and reason.")
                       .Register(*registry_);
  lag_ = &prometheus::BuildGauge()
              .Name("crm_worker_kafka_consumer_lag")
              .Help("Messages behind the partition's high watermark (librdkafka statistics).")
              .Register(*registry_);
  apply_seconds_ = &prometheus::BuildHistogram()
                        .Name("crm_worker_event_apply_seconds")
                        .Help("Time to apply one batch of events, database commit included.")
                        .Register(*registry_)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  prometheus::BuildGauge()
      .Name("crm_worker_build_info")
      .Help("Build metadata; the value is always 1.")
      .Register(*registry_)
      .Add({{"version", CRM_WORKER_VERSION}, {"revision", CRM_WORKER_REVISION}})
      .Set(1);
}

std::string Metrics::topic_label(const std::string& topic) const {
  return topics_.count(topic) ? topic : "other";
}
std::string Metrics::type_label(const std::string& type) const {
  return types_.count(type) ? type : "other";
}
std::string Metrics::reason_label(const std::string& reason) const {
  return dead_letter_reasons().count(reason) ? reason : "other";
}

void Metrics::event(const std::string& topic, const std::string& type, const std::string& outcome) {
  events_->Add({{"topic", topic_label(topic)}, {"type", type_label(type)}, {"outcome", outcome}})
      .Increment();
}

void Metrics::apply_seconds(double seconds) { apply_seconds_->Observe(seconds); }

void Metrics::dead_letter(const std::string& topic, const std::string& reason) {
  dead_letters_->Add({{"topic", topic_label(topic)}, {"reason", reason_label(reason)}}).Increment();
}

void Metrics::set_lag(const std::vector<queue::PartitionLag>& lags) {
  std::lock_guard<std::mutex> lock(lag_mutex_);
  std::map<queue::TopicPartition, prometheus::Gauge*> next;
  for (const auto& l : lags) {
    queue::TopicPartition tp{l.topic, l.partition};
    auto it = lag_series_.find(tp);
    prometheus::Gauge* g = it != lag_series_.end()
                               ? it->second
                               : &lag_->Add({{"topic", topic_label(l.topic)},
                                             {"partition", std::to_string(l.partition)}});
    g->Set(static_cast<double>(l.lag));
    next[tp] = g;
  }
  for (auto& [tp, g] : lag_series_) {
    if (!next.count(tp)) lag_->Remove(g);
  }
  lag_series_ = std::move(next);
}

}  // namespace crm::monitoring
