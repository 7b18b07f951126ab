// monitoring/: the Grafana dashboard is importable JSON whose every panel
// has a data source and queries; the alert rules carry a severity and tell
// the operator what to do, and each has promtool tests; the PromQL checker
// that the integration test holds the files against (monitoring_contract_test)
// finds the mistakes it is there to find.
//
// Whether the metrics exist is checked against a running daemon in
// tests/integration/monitoring_contract_test.cc; promtool checks the rule
// syntax and runs alerts.test.yml (ctest: prometheus_rules_*).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

#include "tests/harness/monitoring_queries.h"
#include "tests/harness/source_tree.h"

namespace crm::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace mq = monitoring_queries;


std::string str(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string().c_str()) : "";
}

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string text = read_file(source_root() / "monitoring/grafana/crm-worker.json");
    ASSERT_FALSE(text.empty()) << "monitoring/grafana/crm-worker.json is missing";
    json::error_code ec;
    dashboard_ = json::parse(text, ec);
    ASSERT_FALSE(ec) << "not JSON: " << ec.message();
    ASSERT_TRUE(dashboard_.is_object());
  }
  const json::object& root() const { return dashboard_.as_object(); }
  json::value dashboard_;
};

const json::object* variable(const json::object& root, const std::string& name) {
  const json::value* templating = root.if_contains("templating");
  if (templating == nullptr || !templating->is_object()) return nullptr;
  const json::value* list = templating->as_object().if_contains("list");
  if (list == nullptr || !list->is_array()) return nullptr;
  for (const auto& v : list->as_array()) {
    if (v.is_object() && str(v.as_object(), "name") == name) return &v.as_object();
  }
  return nullptr;
}

TEST_F(DashboardTest, IsAnImportableDashboardWithDataSourceJobAndInstanceVariables) {
  EXPECT_EQ(str(root(), "uid"), "crm-worker");
  EXPECT_FALSE(str(root(), "title").empty());
  const json::value* schema = root().if_contains("schemaVersion");
  ASSERT_NE(schema, nullptr);
  ASSERT_TRUE(schema->is_int64());
  EXPECT_GE(schema->as_int64(), 36);
  // Importable as is: the data source is a variable, not a value of someone
  // else's Grafana (no fixed uid to replace, works with provisioning too).
  const json::object* ds = variable(root(), "DS_PROMETHEUS");
  ASSERT_NE(ds, nullptr);
  EXPECT_EQ(str(*ds, "type"), "datasource");
  EXPECT_EQ(str(*ds, "query"), "prometheus");
  for (const char* name : {"job", "instance"}) {
    const json::object* v = variable(root(), name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(str(*v, "type"), "query") << name;
    const json::value* vds = v->if_contains("datasource");
    ASSERT_TRUE(vds != nullptr && vds->is_object()) << name;
    EXPECT_EQ(str(vds->as_object(), "uid"), "${DS_PROMETHEUS}") << name;
  }
  const json::value* multi = variable(root(), "instance")->if_contains("multi");
  EXPECT_TRUE(multi != nullptr && multi->is_bool() && multi->as_bool());
}

TEST_F(DashboardTest, EveryPanelHasTheDataSourceAndQueriesWithAnExpression) {
  const auto panels = mq::dashboard_panels(dashboard_);
  ASSERT_GT(panels.size(), 10u);
  std::set<int64_t> ids;
  size_t queries = 0;
  for (const json::object* p : panels) {
    const std::string title = str(*p, "title");
    SCOPED_TRACE("panel \"" + title + "\"");
    const json::value* id = p->if_contains("id");
    ASSERT_TRUE(id != nullptr && id->is_int64());
    EXPECT_TRUE(ids.insert(id->as_int64()).second) << "duplicate panel id " << id->as_int64();
    EXPECT_FALSE(title.empty());
    if (str(*p, "type") == "row") continue;
    const json::value* ds = p->if_contains("datasource");
    ASSERT_TRUE(ds != nullptr && ds->is_object()) << "no datasource";
    EXPECT_EQ(str(ds->as_object(), "type"), "prometheus");
    EXPECT_EQ(str(ds->as_object(), "uid"), "${DS_PROMETHEUS}");
    const json::value* targets = p->if_contains("targets");
    ASSERT_TRUE(targets != nullptr && targets->is_array() && !targets->as_array().empty())
        << "no targets";
    std::set<std::string> refs;
    for (const auto& t : targets->as_array()) {
      ASSERT_TRUE(t.is_object());
      const std::string expr = str(t.as_object(), "expr");
      EXPECT_FALSE(expr.empty()) << "a target without expr";
      const std::string ref = str(t.as_object(), "refId");
      EXPECT_FALSE(ref.empty());
      EXPECT_TRUE(refs.insert(ref).second) << "duplicate refId " << ref;
      if (const json::value* tds = t.as_object().if_contains("datasource")) {
        ASSERT_TRUE(tds->is_object());
        EXPECT_EQ(str(tds->as_object(), "uid"), "${DS_PROMETHEUS}") << ref;
      }
      ++queries;
    }
  }
  EXPECT_EQ(queries, mq::dashboard_queries(dashboard_).size());
}

TEST_F(DashboardTest, PanelsFitTheGridWithoutOverlapping) {
  struct Box {
    std::string title;
    int64_t x, y, w, h;
  };
  std::vector<Box> boxes;
  for (const json::object* p : mq::dashboard_panels(dashboard_)) {
    const json::value* g = p->if_contains("gridPos");
    ASSERT_TRUE(g != nullptr && g->is_object()) << str(*p, "title");
    const auto& o = g->as_object();
    Box b{str(*p, "title"), o.at("x").as_int64(), o.at("y").as_int64(), o.at("w").as_int64(),
          o.at("h").as_int64()};
    EXPECT_GT(b.w, 0) << b.title;
    EXPECT_GT(b.h, 0) << b.title;
    EXPECT_GE(b.x, 0) << b.title;
    EXPECT_LE(b.x + b.w, 24) << b.title;
    for (const Box& other : boxes) {
      const bool apart = b.x + b.w <= other.x || other.x + other.w <= b.x || b.y + b.h <= other.y ||
                         other.y + other.h <= b.y;
      EXPECT_TRUE(apart) << "\"" << b.title << "\" overlaps \"" << other.title << "\"";
    }
    boxes.push_back(b);
  }
}

// SPEC.md §7 and issue 6: what the dashboard must show.
TEST_F(DashboardTest, ShowsEveryMetricTheSpecAsksFor) {
  std::set<std::string> used;
  bool up = false;
  for (const mq::Query& q : mq::dashboard_queries(dashboard_)) {
    const mq::Analysis a = mq::analyze(q.expr, nullptr);
    used.insert(a.metrics.begin(), a.metrics.end());
    up = up || q.expr.find("up{") != std::string::npos;
  }
  for (const char* m :
       {"crm_worker_kafka_consumer_lag", "crm_worker_kafka_consumer_lag_seconds", "crm_worker_events_total",
        "crm_worker_event_apply_seconds_bucket", "crm_worker_dead_letters_total",
        "crm_worker_sync_queue_jobs", "crm_worker_sync_queue_oldest_pending_seconds",
        "crm_worker_followups", "crm_worker_followups_overdue_seconds",
        "crm_worker_external_requests_total", "crm_worker_external_request_seconds_bucket",
        "crm_worker_retries_total", "crm_worker_build_info", "crm_worker_start_time_seconds"}) {
    EXPECT_TRUE(used.count(m)) << m << " has no panel";
  }
  EXPECT_TRUE(up) << "no panel shows up{}";
}

// The shared-table gauges are the same in every instance: summing them over
// instances would multiply the backlog by the number of instances.
TEST_F(DashboardTest, SharedTableGaugesAreNeverSummedOverInstances) {
  for (const mq::Query& q : mq::dashboard_queries(dashboard_)) {
    for (const char* m : {"crm_worker_sync_queue", "crm_worker_followups"}) {
      if (q.expr.find(m) == std::string::npos) continue;
      EXPECT_EQ(q.expr.rfind("max", 0), 0u) << q.where << ": " << q.expr;
      EXPECT_EQ(q.expr.find("instance=~"), std::string::npos)
          << q.where << ": the instance filter would blank it when that instance is down";
    }
  }
}

class AlertRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string text = read_file(source_root() / "monitoring/prometheus/alerts.yml");
    ASSERT_FALSE(text.empty()) << "monitoring/prometheus/alerts.yml is missing";
    std::string error;
    rules_ = mq::read_rules(text, &error);
    ASSERT_TRUE(error.empty()) << error;
  }
  std::vector<mq::Rule> rules_;
};

TEST_F(AlertRulesTest, CoverWhatTheIssueAsksFor) {
  std::set<std::string> names;
  for (const auto& r : rules_) names.insert(r.name);
  // Lag high and growing, consumer stalled, dead letters growing, sync
  // backlog too old, follow-ups overdue, API error rate, instance down,
  // watchdog restarts.
  for (const char* a :
       {"CrmWorkerConsumerLagHigh", "CrmWorkerConsumerStalled", "CrmWorkerDeadLettersGrowing",
        "CrmWorkerSyncBacklogTooOld", "CrmWorkerFollowupsOverdue", "CrmWorkerExternalApiErrors",
        "CrmWorkerInstanceDown", "CrmWorkerRestarting"}) {
    EXPECT_TRUE(names.count(a)) << a;
  }
}

TEST_F(AlertRulesTest, EveryAlertHasASeverityAndTellsTheOperatorWhatToDo) {
  for (const auto& r : rules_) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.kind, "alert");
    EXPECT_TRUE(r.labels.count("severity"));
    const std::string severity = r.labels.count("severity") ? r.labels.at("severity") : "";
    EXPECT_TRUE(severity == "warning" || severity == "critical") << severity;
    for (const char* a : {"summary", "description", "runbook"}) {
      EXPECT_TRUE(r.annotations.count(a) && !r.annotations.at(a).empty()) << "no " << a;
    }
  }
}

TEST_F(AlertRulesTest, EveryAlertHasPromtoolTests) {
  const std::string tests = read_file(source_root() / "monitoring/prometheus/alerts.test.yml");
  ASSERT_FALSE(tests.empty());
  for (const auto& r : rules_) {
    // Both ways: expected to fire (exp_labels) and expected silent (exp_alerts: []).
    EXPECT_NE(tests.find("alertname: " + r.name + "\n        exp_alerts:\n          - exp_labels"),
              std::string::npos)
        << r.name << " is never expected to fire";
    EXPECT_NE(tests.find("alertname: " + r.name + "\n        exp_alerts: []"), std::string::npos)
        << r.name << " is never expected to stay silent";
  }
}

TEST_F(AlertRulesTest, EveryExpressionReads) {
  for (const mq::Query& q : mq::rule_queries(rules_)) {
    const mq::Analysis a = mq::analyze(q.expr, nullptr);
    EXPECT_TRUE(a.problems.empty()) << q.where << ": " << a.problems.front();
  }
}

TEST_F(DashboardTest, EveryExpressionReads) {
  for (const mq::Query& q : mq::dashboard_queries(dashboard_)) {
    const mq::Analysis a = mq::analyze(q.expr, nullptr);
    EXPECT_TRUE(a.problems.empty()) << q.where << ": " << a.problems.front();
    EXPECT_FALSE(a.metrics.empty() && q.expr.find("up{") == std::string::npos) << q.where;
  }
}

// ---- the checker itself, on a hand-made scrape ---------------------------------

mq::Catalog sample_catalog() {
  return mq::parse_exposition(
      "# HELP crm_worker_events_total Events.\n"
      "# TYPE crm_worker_events_total counter\n"
      "crm_worker_events_total{topic=\"t\",type=\"crm.x\",outcome=\"applied\"} 3\n"
      "# TYPE crm_worker_dead_letters_total counter\n"
      "crm_worker_dead_letters_total{topic=\"t\",reason=\"a \\\"quoted\\\", {odd} value\"} 1\n"
      "# TYPE crm_worker_external_request_seconds histogram\n"
      "crm_worker_external_request_seconds_count{api=\"hubspot\"} 2\n"
      "crm_worker_external_request_seconds_sum{api=\"hubspot\"} 0.2\n"
      "crm_worker_external_request_seconds_bucket{api=\"hubspot\",le=\"0.1\"} 2\n"
      "crm_worker_external_request_seconds_bucket{api=\"hubspot\",le=\"+Inf\"} 2\n"
      "# TYPE crm_worker_kafka_consumer_lag gauge\n"
      "# TYPE crm_worker_build_info gauge\n"
      "crm_worker_build_info{version=\"1\",revision=\"abc\"} 1\n");
}

std::vector<std::string> problems(const std::string& expr) {
  const mq::Catalog c = sample_catalog();
  return mq::analyze(expr, &c).problems;
}

TEST(MonitoringQueries, ReadsTheExpositionFormat) {
  const mq::Catalog c = sample_catalog();
  EXPECT_EQ(c.series.at("crm_worker_dead_letters_total"),
            (std::set<std::string>{"topic", "reason"}));
  EXPECT_EQ(c.series.at("crm_worker_external_request_seconds_bucket"),
            (std::set<std::string>{"api", "le"}));
  EXPECT_EQ(c.series.at("crm_worker_external_request_seconds_count"),
            (std::set<std::string>{"api"}));
  EXPECT_EQ(c.families.at("crm_worker_external_request_seconds"), "histogram");
  EXPECT_FALSE(c.series.count("crm_worker_kafka_consumer_lag"));
}

TEST(MonitoringQueries, AcceptsCorrectExpressions) {
  for (const char* e : {
           "sum by (topic, outcome) (rate(crm_worker_events_total{job=~\"$job\", "
           "instance=~\"$instance\"}[$__rate_interval]))",
           "histogram_quantile(0.99, sum by (api, le) "
           "(rate(crm_worker_external_request_seconds_bucket[5m])))",
           "sum(rate(crm_worker_external_request_seconds_sum[5m])) / "
           "sum(rate(crm_worker_external_request_seconds_count[5m]))",
           "sum by (job, topic) (crm_worker_events_total) > 0 unless on (job, topic) sum by (job, "
           "topic) (increase(crm_worker_dead_letters_total[10m])) > 0",
           "crm_worker_dead_letters_total unless crm_worker_dead_letters_total offset 15m",
           "max by (job, instance) (resets(crm_worker_events_total[1h]) or "
           "resets(crm_worker_external_request_seconds_count[1h])) >= 2 or sum by (job, instance) "
           "(changes(up{job=\"crm-worker\"}[1h])) >= 4",
           "absent(up{job=\"crm-worker\"} == 1)",
           "max_over_time(sum by (topic) (crm_worker_events_total)[10m:1m]) > bool 3",
           "-sum(crm_worker_events_total{outcome!~\"dup.*\"}) # a comment",
           "sum(crm_worker_events_total) by (topic)",
           "crm_worker_build_info{version!=\"\"} * on (job, instance) group_left (version) "
           "crm_worker_build_info",
       }) {
    EXPECT_EQ(problems(e), std::vector<std::string>{}) << e;
  }
}

TEST(MonitoringQueries, FindsMissingMetrics) {
  auto p = problems(
      "rate(crm_worker_no_such_total[5m]) + on () sum(crm_worker_external_request_seconds)");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NE(p[0].find("crm_worker_no_such_total is not exported"), std::string::npos) << p[0];
  EXPECT_NE(p[1].find("histogram family"), std::string::npos) << p[1];
  // Declared but without a series: its labels cannot be checked, so it fails.
  p = problems("crm_worker_kafka_consumer_lag");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("no series yet"), std::string::npos) << p[0];
  // Not ours: not checked.
  EXPECT_TRUE(problems("up{job=\"x\"} == 0").empty());
}

TEST(MonitoringQueries, FindsLabelsThatAreNotThere) {
  // A matcher.
  auto p = problems("crm_worker_events_total{api=\"hubspot\"}");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("\"api\""), std::string::npos) << p[0];
  // A grouping, before and after the argument.
  EXPECT_EQ(problems("sum by (reason) (rate(crm_worker_events_total[5m]))").size(), 1u);
  EXPECT_EQ(problems("sum(rate(crm_worker_events_total[5m])) by (reason)").size(), 1u);
  // A grouping over an aggregation that already dropped the label.
  EXPECT_EQ(problems("max by (type) (sum by (topic) (crm_worker_events_total))").size(), 1u);
  // histogram_quantile over buckets summed without le.
  p = problems(
      "histogram_quantile(0.9, sum by (api) "
      "(rate(crm_worker_external_request_seconds_bucket[5m])))");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("\"le\""), std::string::npos) << p[0];
  // on() naming a label one side does not have.
  p = problems(
      "sum by (topic) (crm_worker_events_total) / on (topic) sum by (api) "
      "(crm_worker_external_request_seconds_count)");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("right side"), std::string::npos) << p[0];
  // One-to-one matching between different label sets never matches.
  p = problems(
      "sum by (topic) (crm_worker_events_total) / sum by (api) "
      "(crm_worker_external_request_seconds_count)");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("nothing would match"), std::string::npos) << p[0];
  // job and instance come from Prometheus: always there.
  EXPECT_TRUE(problems("sum by (job, instance) (crm_worker_events_total{job=\"a\"})").empty());
}

TEST(MonitoringQueries, ReportsWhatItCannotRead) {
  for (const char* e :
       {"sum by (topic (crm_worker_events_total)", "rate(crm_worker_events_total[5m]",
        "crm_worker_events_total{topic=\"t}", "crm_worker_events_total ) 1"}) {
    auto p = problems(e);
    ASSERT_EQ(p.size(), 1u) << e;
    EXPECT_NE(p[0].find("cannot read"), std::string::npos) << e << ": " << p[0];
  }
}

TEST(MonitoringQueries, ReadsRulesInTheShapeOfAlertsYml) {
  std::string error;
  auto rules = mq::read_rules(
      "groups:\n"
      "  - name: g\n"
      "    rules:\n"
      "      - alert: A\n"
      "        expr: |\n"
      "          sum by (topic) (crm_worker_events_total)\n"
      "\n"
      "            > 1\n"
      "        for: 5m\n"
      "        labels:\n"
      "          severity: warning\n"
      "        annotations:\n"
      "          summary: \"x {{ $value }}\"\n"
      "          runbook: >-\n"
      "            do this:\n"
      "            then that\n"
      "      - alert: B\n"
      "        expr: |\n"
      "          up == 0\n",
      &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].name, "A");
  EXPECT_EQ(rules[0].expr, "sum by (topic) (crm_worker_events_total)\n\n> 1");
  EXPECT_EQ(rules[0].for_duration, "5m");
  EXPECT_EQ(rules[0].labels, (std::map<std::string, std::string>{{"severity", "warning"}}));
  EXPECT_EQ(rules[0].annotations.size(), 2u);
  EXPECT_EQ(rules[0].annotations.at("summary"), "x {{ $value }}");
  EXPECT_EQ(rules[1].expr, "up == 0");
  // An inline expression is refused rather than misread.
  mq::read_rules("      - alert: C\n        expr: up == 0\n", &error);
  EXPECT_NE(error.find("block"), std::string::npos) << error;
}

}  // namespace
}  // namespace crm::test
