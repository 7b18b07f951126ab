#include "monitoring/probes.h"

#include <chrono>

#include <cctype>

#include <prometheus/gauge.h>

namespace crm::monitoring {

namespace {

constexpr const char* kFollowupStatuses[] = {"scheduled", "sending", "sent", "cancelled", "failed", "dead"};
constexpr const char* kSyncStatuses[] = {"pending", "in_progress", "completed", "failed", "dead"};

prometheus::Histogram::BucketBoundaries external_buckets() {
  return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

std::string api_label(const std::string& api) {
  return api == "hubspot" || api == "sendgrid" || api == "slack" ? api : "other";
}

// HTTP statuses are a bounded set; anything else is "other".
std::string code_label(const std::string& code) {
  if (code == "error" || code == "timeout") return code;
  if (code.size() == 3 && code[0] >= '1' && code[0] <= '5' &&
      std::isdigit(static_cast<unsigned char>(code[1])) &&
      std::isdigit(static_cast<unsigned char>(code[2]))) {
    return code;
  }
  return "other";
}

}  // namespace

const std::set<std::string>& dead_letter_reasons() {
  static const std::set<std::string> kReasons = {
      "empty",        "too_large",       "too_deep",   "not_json",    "invalid_utf8",
      "nul_in_string", "not_object",     "bad_specversion", "missing_field", "wrong_type",
      "bad_time",     "bad_headers",     "not_array",  "too_many_elements", "unknown_type",
      "duplicate_key", "bad_value",
      "db_rejected",  "internal",        "crashed_worker",
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
  lag_seconds_ = &prometheus::BuildGauge()
                      .Name("crm_worker_kafka_consumer_lag_seconds")
                      .Help("Age of the oldest message received from the partition and not yet "
                            "committed (0 when none waits); keeps growing while the partition is "
                            "paused, when the offset lag stands still.")
                      .Register(*registry_);
  apply_seconds_ = &prometheus::BuildHistogram()
                        .Name("crm_worker_event_apply_seconds")
                        .Help("Time to apply one batch of events, database commit included.")
                        .Register(*registry_)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  external_requests_ = &prometheus::BuildCounter()
                            .Name("crm_worker_external_requests_total")
                            .Help("Requests to external APIs, by api and HTTP status (error/timeout: no answer).")
                            .Register(*registry_);
  external_seconds_ = &prometheus::BuildHistogram()
                           .Name("crm_worker_external_request_seconds")
                           .Help("Duration of requests to external APIs, by api.")
                           .Register(*registry_);
  retries_ = &prometheus::BuildCounter()
                  .Name("crm_worker_retries_total")
                  .Help("Failed external requests that were scheduled for another attempt, by api.")
                  .Register(*registry_);
  followups_ = &prometheus::BuildGauge()
                    .Name("crm_worker_followups")
                    .Help("Follow-up timers by status, counted in the shared table (every instance "
                          "reports the same numbers: aggregate with max, not sum). failed: an email "
                          "that may or may not have gone out, never retried automatically.")
                    .Register(*registry_);
  followups_overdue_ = &prometheus::BuildGauge()
                            .Name("crm_worker_followups_overdue_seconds")
                            .Help("How late the oldest due, unfired follow-up is (0 when none is due; "
                                  "every instance reports the same).")
                            .Register(*registry_)
                            .Add({});
  sync_jobs_ = &prometheus::BuildGauge()
                    .Name("crm_worker_sync_queue_jobs")
                    .Help("HubSpot sync jobs by status, counted in the shared table (every instance "
                          "reports the same numbers: aggregate with max). failed: refused by HubSpot "
                          "(4xx); dead: out of attempts; both wait for `crm-worker sync redrive`.")
                    .Register(*registry_);
  sync_oldest_pending_ = &prometheus::BuildGauge()
                              .Name("crm_worker_sync_queue_oldest_pending_seconds")
                              .Help("Age of the oldest pending or in-progress sync job (0 when "
                                    "none; every instance reports the same).")
                              .Register(*registry_)
                              .Add({});
  for (const char* status : kSyncStatuses) sync_jobs_->Add({{"status", status}});
  for (const char* api : {"hubspot", "sendgrid", "slack"}) {
    external_seconds_->Add({{"api", api}}, external_buckets());
    retries_->Add({{"api", api}});
  }
  for (const char* status : kFollowupStatuses) followups_->Add({{"status", status}});
  prometheus::BuildGauge()
      .Name("crm_worker_start_time_seconds")
      .Help("When this process started, in Unix seconds: a change is a restart (the watchdog, "
            "a crash, a deploy).")
      .Register(*registry_)
      .Add({})
      .Set(static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count()) /
           1000.0);
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

void Metrics::set_partition_series(prometheus::Family<prometheus::Gauge>* family, PartitionSeries& series,
                                   const std::vector<std::pair<queue::TopicPartition, double>>& values) {
  std::lock_guard<std::mutex> lock(lag_mutex_);
  PartitionSeries next;
  for (const auto& [tp, value] : values) {
    auto it = series.find(tp);
    prometheus::Gauge* g = it != series.end()
                               ? it->second
                               : &family->Add({{"topic", topic_label(tp.first)},
                                               {"partition", std::to_string(tp.second)}});
    g->Set(value);
    next[tp] = g;
  }
  for (auto& [tp, g] : series) {
    if (!next.count(tp)) family->Remove(g);
  }
  series = std::move(next);
}

void Metrics::set_lag(const std::vector<queue::PartitionLag>& lags) {
  std::vector<std::pair<queue::TopicPartition, double>> values;
  for (const auto& l : lags) values.push_back({{l.topic, l.partition}, static_cast<double>(l.lag)});
  set_partition_series(lag_, lag_series_, values);
}

void Metrics::set_lag_seconds(const std::vector<std::pair<queue::TopicPartition, double>>& ages) {
  set_partition_series(lag_seconds_, lag_seconds_series_, ages);
}

void Metrics::external_request(const std::string& api, const std::string& code, double seconds) {
  const std::string a = api_label(api);
  external_requests_->Add({{"api", a}, {"code", code_label(code)}}).Increment();
  external_seconds_->Add({{"api", a}}, external_buckets()).Observe(seconds);
}

void Metrics::retry(const std::string& api) { retries_->Add({{"api", api_label(api)}}).Increment(); }

void Metrics::set_followups(const std::map<std::string, long long>& by_status,
                            double overdue_seconds) {
  for (const char* status : kFollowupStatuses) {
    auto it = by_status.find(status);
    followups_->Add({{"status", status}}).Set(it == by_status.end() ? 0.0 : static_cast<double>(it->second));
  }
  followups_overdue_->Set(overdue_seconds);
}

void Metrics::set_sync_queue(const std::map<std::string, long long>& by_status,
                             double oldest_pending_seconds) {
  for (const char* status : kSyncStatuses) {
    auto it = by_status.find(status);
    sync_jobs_->Add({{"status", status}}).Set(it == by_status.end() ? 0.0 : static_cast<double>(it->second));
  }
  sync_oldest_pending_->Set(oldest_pending_seconds);
}

}  // namespace crm::monitoring
