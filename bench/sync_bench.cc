// HubSpot sync throughput against the fake HubSpot under HubSpot's own
// burst limit (default 100 requests per 10 s, enforced by the fake and
// configured as hubspot.requests_per_10s): records synced per second, next
// to the most that limit allows (hubspot.batch_size records × the requests
// per second). Prints figures; it asserts nothing.
//
//   bench/run.sh sync [--records N] [--executors E] [--limit L] [--batch B]
//
// N companies (default 30,000) are written and queued, then E executors
// (default 2, each with its own connection, as E instances would) push them.
// The budget starts unspent, so the first window's requests go out at once:
// the steady rate is measured after them, over whole windows.
//
// Needs the throwaway PostgreSQL cluster named by $CRM_TEST_PG_DIR, which
// bench/run.sh starts.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>
#include <prometheus/text_serializer.h>

#include "daemon/config.h"
#include "daemon/logging.h"
#include "daemon/sync_executor.h"
#include "monitoring/probes.h"
#include "tests/harness/fake_hubspot.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  long long records = 30000;
  int executors = 2;
  int limit = 100;
  int batch = 100;
};

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: sync_bench [--records N] [--executors E] [--limit L] [--batch B]\n");
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage();
    const long long v = std::atoll(argv[++i]);
    if (k == "--records" && v > 0) {
      a.records = v;
    } else if (k == "--executors" && v > 0 && v <= 16) {
      a.executors = static_cast<int>(v);
    } else if (k == "--limit" && v > 0 && v <= 10000) {
      a.limit = static_cast<int>(v);
    } else if (k == "--batch" && v > 0 && v <= 100) {
      a.batch = static_cast<int>(v);
    } else {
      usage();
    }
  }
  return a;
}

int run(const Args& args) {
  log::set_level(log::Level::kError);
  TestDatabase db;
  FakeHubspot hubspot;
  hubspot.set_rate_limit(args.limit, std::chrono::milliseconds(10000));
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec_params(
        "INSERT INTO companies (id, name, domain, city) "
        "SELECT 'c' || g, 'Company ' || g, 'c' || g || '.example', 'Berlin' FROM generate_series(1, $1) g",
        args.records);
    tx.exec_params(
        "INSERT INTO sync_queue (entity_type, entity_id, operation) "
        "SELECT 'company', 'c' || g, 'upsert' FROM generate_series(1, $1) g",
        args.records);
    tx.commit();
  }
  Config config;
  config.hubspot.base_url = hubspot.base_url();
  config.hubspot.token = Secret("bench-token");
  config.hubspot.requests_per_10s = args.limit;
  config.hubspot.batch_size = args.batch;
  monitoring::Metrics metrics{{}, {}};
  std::vector<std::unique_ptr<SyncExecutor>> executors;
  for (int i = 0; i < args.executors; ++i) {
    executors.push_back(std::make_unique<SyncExecutor>(config, db.conninfo(), metrics,
                                                       "bench-" + std::to_string(i)));
  }
  std::printf("HubSpot sync: %lld companies, %d executor(s), limit %d requests / 10 s, batch %d\n",
              args.records, args.executors, args.limit, args.batch);

  std::atomic<bool> stop{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (auto& e : executors) threads.emplace_back([&e, &stop] { e->run(stop); });

  // Completed records over time, sampled every 100 ms.
  std::vector<std::pair<double, long long>> samples;
  auto c = db.connect();
  for (;;) {
    pqxx::work tx(*c);
    const long long done = tx.exec("SELECT count(*) FROM sync_queue WHERE status = 'completed'")[0][0].as<long long>();
    tx.commit();
    samples.emplace_back(std::chrono::duration<double>(Clock::now() - t0).count(), done);
    if (done >= args.records || samples.back().first > 600) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop = true;
  for (auto& t : threads) t.join();

  const double total_s = samples.back().first;
  const long long total = samples.back().second;
  // The steady rate. The budget starts unspent, so the first window's
  // requests go out at once (a burst); after it, every later window carries
  // one window's worth. From the moment the first window's records were done
  // to the end, the run spans whole windows: records over that time.
  const long long first_window = static_cast<long long>(args.limit) * args.batch;
  double steady = 0;
  auto first = std::find_if(samples.begin(), samples.end(),
                            [&](const auto& s) { return s.second >= first_window; });
  if (first != samples.end() && total - first->second >= first_window) {
    steady = static_cast<double>(total - first->second) / (total_s - first->first);
  }
  const double max_rate = static_cast<double>(args.limit) / 10.0 * args.batch;
  std::printf("  synced %lld records in %.1f s (%.0f records/s overall, the first window's burst included)\n",
              total, total_s, static_cast<double>(total) / total_s);
  if (steady > 0) {
    std::printf("  steady rate after the first window: %.0f records/s = %.1f%% of the limit's maximum "
                "(%.0f records/s: %d records x %.0f requests/s)\n",
                steady, 100.0 * steady / max_rate, max_rate, args.batch, args.limit / 10.0);
  } else {
    std::printf("  too few records for a steady rate after the first window: use --records %lld or more\n",
                2 * first_window);
  }
  const std::string text = prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
  const double http_s = metric_sum(text, "crm_worker_external_request_seconds_sum{api=\"hubspot\"}");
  const double http_n = metric_sum(text, "crm_worker_external_request_seconds_count{api=\"hubspot\"}");
  if (http_n > 0) {
    std::printf("  time in HubSpot requests: %.0f ms per request on average (%.0f%% of the run per executor)\n",
                1000 * http_s / http_n, 100 * http_s / args.executors / total_s);
  }
  std::printf("  requests: %d upserts; at most %d in any 10 s (limit %d); answered 429 by the limit: %d\n",
              hubspot.requests_of("upsert"), hubspot.max_requests_in_any_interval(), args.limit,
              hubspot.rate_limit_violations());
  return 0;
}

}  // namespace
}  // namespace crm::test

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return crm::test::run(crm::test::parse(argc, argv));
}
