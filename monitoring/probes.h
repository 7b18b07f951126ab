#pragma once
// Metric probes: the only place that touches prometheus-cpp objects, so
// business code calls probe methods and never sees a metric. Every label
// value comes from an allow-list fixed at construction (topics from the
// configuration, event types from the routing table, reasons from the
// decoder's tokens); anything else is reported as "other", so hostile input
// cannot create new series.
//
// Thread-safe (prometheus-cpp metrics are); shared by the consumer thread
// and the HTTP server's threads.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "queue/kafka_consumer.h"

namespace crm::monitoring {

class Metrics {
 public:
  Metrics(std::vector<std::string> topics, std::vector<std::string> event_types);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // outcome: applied, duplicate, dead_letter.
  void event(const std::string& topic, const std::string& type, const std::string& outcome);
  void apply_seconds(double seconds);
  void dead_letter(const std::string& topic, const std::string& reason);
  // Replaces the lag series with the given set (unassigned partitions vanish).
  void set_lag(const std::vector<queue::PartitionLag>& lags);
  // The same, in seconds: per assigned partition, the age of the oldest
  // message received and not yet committed (0 when none waits). Unlike the
  // offset lag it keeps growing while a partition is paused.
  void set_lag_seconds(const std::vector<std::pair<queue::TopicPartition, double>>& ages);

  // External APIs (api: hubspot, sendgrid, slack). `code` is the HTTP status
  // ("202", "429") or, when no answer came, "error" / "timeout".
  void external_request(const std::string& api, const std::string& code, double seconds);
  void retry(const std::string& api);

  // Follow-up timers, refreshed by the follow-up executor: rows per status
  // (every status of the schema, 0 when none; `failed` = in doubt, for an
  // operator) and how late the oldest due timer is (0 when none is due).
  void set_followups(const std::map<std::string, long long>& by_status, double overdue_seconds);

  // HubSpot sync jobs, refreshed by the sync executor: jobs per status
  // (every status of the schema) and the age of the oldest unfinished one.
  void set_sync_queue(const std::map<std::string, long long>& by_status,
                      double oldest_pending_seconds);

 private:
  std::string topic_label(const std::string& topic) const;
  std::string type_label(const std::string& type) const;
  std::string reason_label(const std::string& reason) const;

  std::shared_ptr<prometheus::Registry> registry_;
  std::set<std::string> topics_;
  std::set<std::string> types_;
  prometheus::Family<prometheus::Counter>* events_;
  prometheus::Family<prometheus::Counter>* dead_letters_;
  prometheus::Family<prometheus::Gauge>* lag_;
  prometheus::Histogram* apply_seconds_;
  prometheus::Family<prometheus::Counter>* external_requests_;
  prometheus::Family<prometheus::Histogram>* external_seconds_;
  prometheus::Family<prometheus::Counter>* retries_;
  prometheus::Family<prometheus::Gauge>* followups_;
  prometheus::Gauge* followups_overdue_;
  prometheus::Family<prometheus::Gauge>* sync_jobs_;
  prometheus::Gauge* sync_oldest_pending_;
  using PartitionSeries = std::map<queue::TopicPartition, prometheus::Gauge*>;
  void set_partition_series(prometheus::Family<prometheus::Gauge>* family, PartitionSeries& series,
                            const std::vector<std::pair<queue::TopicPartition, double>>& values);
  prometheus::Family<prometheus::Gauge>* lag_seconds_;
  std::mutex lag_mutex_;
  PartitionSeries lag_series_;
  PartitionSeries lag_seconds_series_;
};

// The reasons a dead letter may carry (decoder tokens, unknown_type, and
// the handlers' own). Others are counted as "other".
const std::set<std::string>& dead_letter_reasons();

}  // namespace crm::monitoring
