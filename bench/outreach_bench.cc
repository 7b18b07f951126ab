// Outreach throughput: N mixed outreach events (every type of SPEC.md §4 and
// SendGrid webhook batches, ~10% duplicates, shuffled) applied end to end,
// and the applier alone on the same events. Prints events per second; it
// asserts nothing (speed is a figure, not a test).
//
//   bench/run.sh [--events N] [--batch B]
//
// Needs the throwaway PostgreSQL cluster named by $CRM_TEST_PG_DIR, which
// bench/run.sh starts.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_events.h"
#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Args {
  size_t events = 20000;
  size_t batch = 500;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    size_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (k == "--events" && v > 0) a.events = v;
    else if (k == "--batch" && v > 0) a.batch = v;
    else {
      std::fprintf(stderr, "usage: outreach_bench [--events N] [--batch B]\n");
      std::exit(2);
    }
  }
  return a;
}

int run(const Args& args) {
  const std::vector<HistoryEvent> events = distinct_events(args.events);
  const std::vector<HistoryEvent> delivered = with_duplicates(events);
  std::printf("outreach_bench: %zu distinct events, %zu messages (duplicates included), batch %zu\n",
              events.size(), delivered.size(), args.batch);

  Config config;
  config.slack.webhook_url = Secret("http://127.0.0.1:9/x");
  const db::ProjectionOptions options = db::projection_options(config);

  {
    TestDatabase db;
    db::Database conn(db.conninfo());
    auto t0 = Clock::now();
    Status s = apply_events(conn, delivered, args.batch, options);
    double secs = seconds_since(t0);
    if (!s) {
      std::fprintf(stderr, "applier failed: %s\n", s.message().c_str());
      return 1;
    }
    std::printf("applier only:  %8.0f messages/s  (%.2f s, one transaction per %zu)\n",
                delivered.size() / secs, secs, args.batch);
  }

  TestDatabase db;
  DevBrokerProcess broker(1, 6);
  Producer producer(broker.bootstrap());
  std::vector<Producer::OutMessage> out;
  for (const HistoryEvent& e : delivered) out.push_back({e.topic, e.key, e.value});
  auto tp = Clock::now();
  size_t acked = producer.send_all(out);
  std::printf("produced:      %8.0f messages/s  (%zu acknowledged)\n", acked / seconds_since(tp), acked);
  if (acked != out.size()) return 1;

  const std::string toml = "[consumer]\nbatch_max_events = " + std::to_string(args.batch) + "\n";
  WorkerProcess worker(db, broker.bootstrap(), {{"CRM_WORKER_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/x"},
                                                 {"CRM_WORKER_LOG_LEVEL", "warn"}},
                       toml);
  // Timed from the first applied event, so the group join is not counted.
  if (!wait_until([&] { return db.count("SELECT count(*) FROM processed_events") > 0; }, 60s)) {
    std::fprintf(stderr, "the worker applied nothing:\n%s\n", worker.process().log().c_str());
    return 1;
  }
  auto t0 = Clock::now();
  const long long want = static_cast<long long>(events.size());
  if (!wait_until([&] { return db.count("SELECT count(*) FROM processed_events") >= want; }, 600s)) {
    std::fprintf(stderr, "not all events applied in 10 minutes\n");
    return 1;
  }
  double secs = seconds_since(t0);
  std::printf("end to end:    %8.0f events/s    (%.2f s for %lld distinct events through the dev broker)\n",
              want / secs, secs, want);
  return 0;
}

}  // namespace
}  // namespace crm::test

int main(int argc, char** argv) { return crm::test::run(crm::test::parse(argc, argv)); }
