// Guarantee: every crm_worker_* metric and label that the Grafana dashboard
// (monitoring/grafana/crm-worker.json) and the alert rules
// (monitoring/prometheus/alerts.yml) use is exported by a running
// crm-worker, so no panel stays empty and no alert is silently blind
// because of a renamed metric or label.
//
// The daemon runs for real (dev broker, PostgreSQL, a fake HubSpot) and is
// given work of several kinds, so that the series born on first use exist:
// events of three types applied, a duplicate, a poison message (a dead
// letter), a HubSpot sync (an external request), and the lag statistics.
// Then /metrics is scraped once and every expression is read with the
// checker of tests/harness/monitoring_queries.h: a metric name the scrape
// does not have, a matcher or by()/on() label its series do not carry, a
// histogram_quantile without le, or a one-to-one match between different
// label sets is a failure, and the message lists each one with the panel or
// alert it is in.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

#include "tests/harness/fake_hubspot.h"
#include "tests/harness/harness.h"
#include "tests/harness/monitoring_queries.h"
#include "tests/harness/outreach_history.h"
#include "tests/harness/source_tree.h"

namespace crm::test {
namespace {

namespace fs = std::filesystem;
namespace mq = monitoring_queries;


std::vector<mq::Query> monitoring_queries() {
  std::vector<mq::Query> out;
  const std::string dashboard = read_file(source_root() / "monitoring/grafana/crm-worker.json");
  EXPECT_FALSE(dashboard.empty()) << "monitoring/grafana/crm-worker.json is missing";
  boost::json::error_code ec;
  const boost::json::value d = boost::json::parse(dashboard, ec);
  EXPECT_FALSE(ec) << "crm-worker.json: " << ec.message();
  out = mq::dashboard_queries(d);
  std::string error;
  const auto rules =
      mq::read_rules(read_file(source_root() / "monitoring/prometheus/alerts.yml"), &error);
  EXPECT_TRUE(error.empty()) << "alerts.yml: " << error;
  for (auto& q : mq::rule_queries(rules)) out.push_back(std::move(q));
  return out;
}

// One running worker with every kind of series, scraped once per test
// binary run (ctest runs each test in a process of its own).
class MonitoringContract : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    db_ = new TestDatabase();
    broker_ = new DevBrokerProcess(1, 2);
    hubspot_ = new FakeHubspot();
    const std::string config =
        "[hubspot]\nbase_url = \"" + hubspot_->base_url() + "\"\ntimeout = \"2s\"\n";
    worker_ = new WorkerProcess(*db_, broker_->bootstrap(),
                                {{"CRM_WORKER_HUBSPOT_TOKEN", "pat-monitoring-test"}}, config);
    scrape_ = new std::string(produce_and_scrape());
  }
  static void TearDownTestSuite() {
    delete scrape_;
    delete worker_;
    delete hubspot_;
    delete broker_;
    delete db_;
  }

  static std::string produce_and_scrape() {
    WorkerProcess& worker = *worker_;
    // Migrations are applied once it is ready; the sync needs a company row.
    if (!wait_until([&] { return worker.http_get("/readyz").first == 200; }, 60s)) {
      ADD_FAILURE() << "the worker never became ready\n" << worker.process().log();
      return "";
    }
    {
      auto c = db_->connect();
      pqxx::work tx(*c);
      tx.exec("INSERT INTO companies (id, name, domain) VALUES ('c1', 'Acme', 'acme.example')");
      tx.commit();
    }
    Producer producer(broker_->bootstrap());
    const std::string discovered = discovered_event("ev-1", "p1", "Ada", "2026-03-01T09:00:00Z",
                                                    "\"email\":\"ada@example.com\"");
    const std::vector<HistoryEvent> events = {
        cloud_event(
            "ev-2", "crm.followup.scheduled", "2026-03-01T09:00:01Z",
            R"({"followup_id":"f1","prospect_id":"p1","kind":"call_reminder","due_at":"2030-01-01T09:00:00Z"})"),
        cloud_event("ev-3", "crm.sync.requested", "2026-03-01T09:00:02Z",
                    R"({"entity_type":"company","entity_id":"c1","operation":"upsert"})"),
    };
    bool sent = producer.send("crm.outreach.events", "p1", discovered) >= 0 &&
                producer.send("crm.outreach.events", "p1", discovered) >= 0 &&  // a duplicate
                producer.send("crm.followups", "p1", events[0].value) >= 0 &&
                producer.send("crm.sync.jobs", "c1", events[1].value) >= 0 &&
                producer.send("crm.outreach.events", "px", "{not json") >= 0;  // a dead letter
    if (!sent) {
      ADD_FAILURE() << "the broker did not acknowledge the events";
      return "";
    }
    // Every series the files need, present at once.
    const std::vector<std::string> wanted = {
        "crm_worker_events_total{",
        "outcome=\"applied\"",
        "outcome=\"duplicate\"",
        "outcome=\"dead_letter\"",
        "crm_worker_dead_letters_total{",
        "crm_worker_kafka_consumer_lag{",
        "crm_worker_external_requests_total{api=\"hubspot\"",
    };
    std::string text;
    std::string missing;
    const bool all = wait_until(
        [&] {
          text = worker.http_get("/metrics").second;
          missing.clear();
          for (const auto& w : wanted) {
            if (text.find(w) == std::string::npos) missing += " " + w;
          }
          return missing.empty() &&
                 metric_sum(text, "crm_worker_events_total{outcome=\"applied\"") >= 3;
        },
        60s);
    if (!all) {
      ADD_FAILURE() << "series never appeared:" << missing << "\n"
                    << text << "\n"
                    << worker.process().log();
    }
    return text;
  }

  static TestDatabase* db_;
  static DevBrokerProcess* broker_;
  static FakeHubspot* hubspot_;
  static WorkerProcess* worker_;
  static std::string* scrape_;
};

TestDatabase* MonitoringContract::db_ = nullptr;
DevBrokerProcess* MonitoringContract::broker_ = nullptr;
FakeHubspot* MonitoringContract::hubspot_ = nullptr;
WorkerProcess* MonitoringContract::worker_ = nullptr;
std::string* MonitoringContract::scrape_ = nullptr;

TEST_F(MonitoringContract, EveryMetricAndLabelTheDashboardAndAlertsUseIsExported) {
  ASSERT_FALSE(scrape_->empty());
  const mq::Catalog catalog = mq::parse_exposition(*scrape_);
  const std::vector<mq::Query> queries = monitoring_queries();
  ASSERT_GT(queries.size(), 20u);
  std::set<std::string> used;
  std::string report;
  for (const mq::Query& q : queries) {
    const mq::Analysis a = mq::analyze(q.expr, &catalog);
    used.insert(a.metrics.begin(), a.metrics.end());
    for (const std::string& p : a.problems) report += "\n  " + q.where + ": " + p;
  }
  EXPECT_TRUE(report.empty()) << "the dashboard or the alerts use what /metrics does not have:"
                              << report << "\n\n/metrics:\n"
                              << *scrape_;
  // The check looked at something.
  EXPECT_GE(used.size(), 10u);
  std::string names;
  for (const auto& u : used) names += " " + u;
  std::printf("checked %zu queries using:%s\n", queries.size(), names.c_str());
}

// The other way round: a metric the worker exports but no panel shows is
// one an operator never sees. (When crm_worker_kafka_consumer_lag_seconds
// arrives, this asks for its panel.)
TEST_F(MonitoringContract, EveryExportedMetricIsOnTheDashboard) {
  ASSERT_FALSE(scrape_->empty());
  const mq::Catalog catalog = mq::parse_exposition(*scrape_);
  const std::string text = read_file(source_root() / "monitoring/grafana/crm-worker.json");
  boost::json::error_code ec;
  const boost::json::value d = boost::json::parse(text, ec);
  ASSERT_FALSE(ec);
  std::set<std::string> used;
  for (const mq::Query& q : mq::dashboard_queries(d)) {
    const mq::Analysis a = mq::analyze(q.expr, nullptr);
    used.insert(a.metrics.begin(), a.metrics.end());
  }
  std::string unshown;
  for (const auto& [family, type] : catalog.families) {
    if (family.rfind("crm_worker_", 0) != 0) continue;
    const bool shown = type == "histogram"
                           ? used.count(family + "_bucket") || used.count(family + "_sum") ||
                                 used.count(family + "_count")
                           : used.count(family) > 0;
    if (!shown) unshown += " " + family;
  }
  EXPECT_TRUE(unshown.empty()) << "exported, but on no panel of monitoring/grafana/crm-worker.json:"
                               << unshown;
}

}  // namespace
}  // namespace crm::test
