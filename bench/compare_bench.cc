// crm-worker side by side with the peer and with PostgreSQL's ceiling, in
// one run, on one throwaway PostgreSQL (fsync on) and the dev broker:
//
//   1. N mixed outreach events (default 200,000, seeded, ~10% sent twice)
//      published, then applied by `crm-worker run` with its defaults (no
//      Slack: the peer queues no notifications): events per second from
//      the first applied event to the last (published -> committed), how
//      the batches came (transactions, events and milliseconds each), the
//      worker's share of a core, and its peak RSS;
//   2. latency at a steady rate (default 1,000 events/s for 20 s):
//      published (the producer's call) -> committed (the commit timestamp
//      of the transaction that applied it; track_commit_timestamp is on in
//      bench/run.sh's cluster), p50 / p99 / max;
//   3. the peer (bench/peer.py: Python, one transaction per event, offset
//      committed after each message) on the same topics, into a database of
//      its own, for --peer-seconds;
//   4. the ceiling: the very rows crm-worker wrote, written again into an
//      empty database by an ideal client: COPY, and 500-row multi-row
//      INSERTs (one transaction each);
//
// then a table of the ratios. It asserts nothing: speed is a figure.
// --pool-size P runs the worker with database.pool_size = P (P = 1: one
// transaction at a time, no lanes).
//
//   bench/run.sh compare [--events N] [--rate R] [--rate-seconds S] [--peer-seconds S] [--pool-size P]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/tablereader>
#include <pqxx/tablewriter>
#include <signal.h>
#include <unistd.h>

#include "bench/bench_events.h"
#include "tests/harness/harness.h"
#include "tests/harness/source_tree.h"

// tablereader/tablewriter move rows as COPY text lines, whatever their
// columns: what an ideal client's COPY does. libpqxx 6.4 calls them
// deprecated in favour of typed streams, which need the column types.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace crm::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  size_t events = 200000;
  int rate = 1000;
  int rate_seconds = 20;
  int peer_seconds = 60;
  int pool_size = 0;  // 0: the daemon's default (database.pool_size)
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (v > 0 && k == "--events") a.events = static_cast<size_t>(v);
    else if (v > 0 && k == "--rate") a.rate = static_cast<int>(v);
    else if (v > 0 && k == "--rate-seconds") a.rate_seconds = static_cast<int>(v);
    else if (v > 0 && k == "--peer-seconds") a.peer_seconds = static_cast<int>(v);
    else if (v > 0 && k == "--pool-size") a.pool_size = static_cast<int>(v);
    else {
      std::fprintf(stderr,
                   "usage: compare_bench [--events N] [--rate R] [--rate-seconds S] [--peer-seconds S] [--pool-size P]\n");
      std::exit(2);
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "compare_bench: every option takes a value\n");
    std::exit(2);
  }
  return a;
}

// The tables the events write, parents first (deals name companies).
const std::vector<std::string> kTables = {
    "companies",       "contacts",          "prospects",      "deals",          "email_activities",
    "sms_activities",  "call_activities",   "customers",      "subscriptions",  "outreach_activities",
    "pipeline_stages", "processed_events",  "followups",      "sync_queue",     "notifications"};

long long peak_rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// CPU seconds (user + system) a process has used so far.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold spaces.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(field.c_str());  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// The worker's transactions so far: crm_worker_event_apply_seconds' count
// and sum.
struct Applies {
  double count = 0, seconds = 0;
};

Applies applies_of(const WorkerProcess& worker) {
  Applies a;
  const std::string text = worker.http_get("/metrics").second;
  std::smatch m;
  if (std::regex_search(text, m, std::regex(R"(\ncrm_worker_event_apply_seconds_count(\{\})? ([0-9.e+]+))"))) {
    a.count = std::atof(m[2].str().c_str());
  }
  if (std::regex_search(text, m, std::regex(R"(\ncrm_worker_event_apply_seconds_sum(\{\})? ([0-9.e+]+))"))) {
    a.seconds = std::atof(m[2].str().c_str());
  }
  return a;
}

// "T transactions of E events on average, A ms each": how the batches came.
void print_applies(const char* phase, Applies before, Applies after, double events) {
  const double n = after.count - before.count;
  if (n <= 0) return;
  std::printf("             %s: %.0f transactions, %.1f events and %.1f ms each on average\n", phase, n, events / n,
              1000.0 * (after.seconds - before.seconds) / n);
}

// Waits until `count_sql` reaches `target`; false (and says so) when it
// stops moving for a minute: a lost message would otherwise hang the run.
bool wait_progressing(const TestDatabase& db, const std::string& count_sql, long long target) {
  long long last = -1;
  auto moved = Clock::now();
  for (;;) {
    const long long now = db.count(count_sql);
    if (now >= target) return true;
    if (now != last) {
      last = now;
      moved = Clock::now();
    } else if (Clock::now() - moved > 60s) {
      std::fprintf(stderr, "stalled at %lld of %lld events for a minute\n", now, target);
      return false;
    }
    // count(*) over a growing table is not free: once a second keeps the
    // benchmark's own load on the database small.
    std::this_thread::sleep_for(1s);
  }
}

// Every row of the event tables, as COPY text lines and as JSON.
struct Rows {
  std::map<std::string, std::vector<std::string>> copy, json;
  size_t count = 0;
};

Rows read_rows(const TestDatabase& db) {
  Rows r;
  auto c = db.connect();
  for (const std::string& t : kTables) {
    {
      pqxx::work tx(*c);
      pqxx::tablereader reader(tx, t);
      auto& lines = r.copy[t];
      for (std::string line; reader.get_raw_line(line);) lines.push_back(line);
      reader.complete();
      tx.commit();
    }
    pqxx::work tx(*c);
    auto& json = r.json[t];
    // The name is one of kTables, quoted.
    for (const auto& row : tx.exec_params("SELECT row_to_json(t)::text FROM " + tx.quote_name(t) + " t")) {
      json.push_back(row[0].c_str());
    }
    r.count += r.copy[t].size();
  }
  return r;
}

double write_with_copy(const TestDatabase& db, const Rows& rows) {
  auto c = db.connect();
  const auto t0 = Clock::now();
  for (const std::string& t : kTables) {
    pqxx::work tx(*c);
    pqxx::tablewriter writer(tx, t);
    for (const std::string& line : rows.copy.at(t)) writer.write_raw_line(line);
    writer.complete();
    tx.commit();
  }
  return seconds_since(t0);
}

double write_with_inserts(const TestDatabase& db, const Rows& rows, size_t per_statement) {
  auto c = db.connect();
  // Table names from kTables only, quoted: no input reaches this SQL.
  for (const std::string& t : kTables) {
    c->prepare("insert_" + t, "INSERT INTO " + c->quote_name(t) + " SELECT * FROM json_populate_recordset(NULL::" +
                                  c->quote_name(t) + ", $1::json) ON CONFLICT DO NOTHING");
  }
  const auto t0 = Clock::now();
  for (const std::string& t : kTables) {
    const auto& all = rows.json.at(t);
    for (size_t i = 0; i < all.size(); i += per_statement) {
      std::string chunk = "[";
      for (size_t k = i; k < std::min(all.size(), i + per_statement); ++k) {
        if (k > i) chunk += ',';
        chunk += all[k];
      }
      chunk += ']';
      pqxx::work tx(*c);
      tx.exec_prepared("insert_" + t, chunk);
      tx.commit();
    }
  }
  return seconds_since(t0);
}

void empty_tables(const TestDatabase& db) {
  auto c = db.connect();
  pqxx::work tx(*c);
  std::string names;
  for (const std::string& t : kTables) names += (names.empty() ? "" : ", ") + tx.quote_name(t);
  tx.exec0("TRUNCATE " + names + " CASCADE");
  tx.commit();
}

int run(const Args& args) {
  const std::vector<HistoryEvent> events = distinct_events(args.events);
  const std::vector<HistoryEvent> delivered = with_duplicates(events);
  const long long distinct = static_cast<long long>(events.size());
  std::printf("compare_bench: %zu distinct events, %zu messages (duplicates included)\n", events.size(),
              delivered.size());

  // The dev broker keeps at most 5 MiB per partition and silently drops
  // the oldest beyond that (REFERENCE.md, "Silent retention"): enough
  // partitions that the largest topic fits with room to spare, whatever N.
  size_t bytes = 0;
  for (const HistoryEvent& e : delivered) bytes += e.value.size() + e.key.size() + 64;
  const int partitions = static_cast<int>(std::clamp<size_t>(bytes / (2u << 20) + 1, 6, 64));
  std::printf("dev broker:  %d partitions per topic for %.0f MB of messages\n", partitions, bytes / 1e6);
  TestDatabase db;
  DevBrokerProcess broker(1, partitions);
  Producer producer(broker.bootstrap());
  std::vector<Producer::OutMessage> out;
  for (const HistoryEvent& e : delivered) out.push_back({e.topic, e.key, e.value});
  const size_t acked = producer.send_all(out);
  if (acked != out.size()) {
    std::fprintf(stderr, "only %zu of %zu messages acknowledged\n", acked, out.size());
    return 1;
  }

  // 1. Throughput, end to end.
  // No Slack: the peer queues no notifications either.
  WorkerProcess worker(db, broker.bootstrap(), {{"CRM_WORKER_LOG_LEVEL", "warn"}},
                       args.pool_size > 0 ? "\n[database]\npool_size = " + std::to_string(args.pool_size) + "\n" : "");
  if (!wait_until([&] { return db.count("SELECT count(*) FROM processed_events") > 0; }, 60s)) {
    std::fprintf(stderr, "the worker applied nothing:\n%s\n", worker.process().log().c_str());
    return 1;
  }
  const Applies at_start = applies_of(worker);
  const double cpu_at_start = cpu_seconds(worker.process().pid());
  const auto t0 = Clock::now();
  if (!wait_progressing(db, "SELECT count(*) FROM processed_events", distinct)) return 1;
  const double worker_secs = seconds_since(t0);
  const double worker_rate = static_cast<double>(distinct) / worker_secs;
  std::printf("crm-worker:  %8.0f events/s  (%lld distinct events in %.1f s)\n", worker_rate, distinct, worker_secs);
  const Applies after_backlog = applies_of(worker);
  print_applies("backlog", at_start, after_backlog, static_cast<double>(distinct));
  std::printf("             the worker process used %.0f%% of one core meanwhile\n",
              100.0 * (cpu_seconds(worker.process().pid()) - cpu_at_start) / worker_secs);

  // 2. Latency at a steady rate.
  const bool commit_times = db.scalar("SHOW track_commit_timestamp") == "on";
  const int n = args.rate * args.rate_seconds;
  std::vector<Producer::OutMessage> paced;
  for (int i = 0; i < n; ++i) {
    const std::string id = "lat-" + std::to_string(i);
    const std::string pid = "lat-p-" + std::to_string(i % 500);
    paced.push_back({"crm.outreach.events", pid,
                     discovered_event(id, pid, "Latency " + std::to_string(i), "2026-03-01T10:00:00Z")});
  }
  // Produced on schedule without waiting for each acknowledgement, as an
  // upstream service does; each timestamped as it is handed to the client.
  std::vector<std::pair<std::string, double>> sent;  // id, epoch seconds
  const auto start = Clock::now();
  const auto deliveries = producer.publish(paced, [&](size_t i) {
    std::this_thread::sleep_until(start + std::chrono::microseconds(1000000LL * static_cast<long long>(i) / args.rate));
    const double at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    sent.push_back({"lat-" + std::to_string(i), at});
  });
  for (size_t i = 0; i < deliveries.size(); ++i) {
    if (deliveries[i].offset < 0) {
      std::fprintf(stderr, "latency event %zu not acknowledged\n", i);
      return 1;
    }
  }
  const double achieved = n > 1 ? (n - 1) / (sent.back().second - sent.front().second) : n;
  if (!wait_progressing(db, "SELECT count(*) FROM processed_events WHERE event_id LIKE 'lat-%'", n)) return 1;
  const long long rss_kb = peak_rss_kb(worker.process().pid());
  print_applies("steady rate", after_backlog, applies_of(worker), n);
  std::map<std::string, double> committed;
  {
    auto c = db.connect();
    pqxx::nontransaction tx(*c);
    const std::string when = commit_times ? "pg_xact_commit_timestamp(xmin)" : "processed_at";
    for (const auto& row : tx.exec("SELECT event_id, extract(epoch FROM " + when +
                                   ") FROM processed_events WHERE event_id LIKE 'lat-%'")) {
      committed[row[0].c_str()] = row[1].as<double>();
    }
  }
  std::vector<double> latency_ms;
  for (const auto& [id, at] : sent) latency_ms.push_back((committed.at(id) - at) * 1000.0);
  std::printf("latency:     p50 %.1f ms, p99 %.1f ms, max %.1f ms at %.0f events/s for %d s (%s)\n",
              percentile(latency_ms, 0.50), percentile(latency_ms, 0.99), percentile(latency_ms, 1.0), achieved,
              args.rate_seconds, commit_times ? "published -> committed" : "published -> transaction start");
  std::printf("RSS:         %.1f MB peak\n", rss_kb / 1024.0);
  worker.process().signal(SIGTERM);
  worker.process().wait(60s);

  // 3. The peer, on the same topics, into a database of its own.
  double peer_rate = 0;
  long long peer_events = 0;
  {
    TestDatabase peer_db;
    TempDir dir;
    Process peer({"/usr/bin/python3", (source_root() / "bench" / "peer.py").string(), "--bootstrap",
                  broker.bootstrap(), "--dsn", peer_db.conninfo(), "--seconds", std::to_string(args.peer_seconds),
                  "--expect", std::to_string(distinct)},
                 {}, dir.file("peer.log"));
    const auto code = peer.wait(std::chrono::seconds(args.peer_seconds + 120));
    std::smatch m;
    const std::string log = peer.log();
    if (code != 0 || !std::regex_search(log, m, std::regex(R"(peer: (\d+) events in [0-9.]+ s: (\d+) events/s)"))) {
      std::fprintf(stderr, "the peer failed:\n%s\n", log.c_str());
      return 1;
    }
    peer_events = std::atoll(m[1].str().c_str());
    peer_rate = std::atof(m[2].str().c_str());
    std::printf("peer:        %8.0f events/s  (%lld events in its %d s)\n", peer_rate, peer_events, args.peer_seconds);
  }

  // 4. The ceiling: crm-worker's own rows, written again.
  {
    auto c = db.connect();
    pqxx::work tx(*c);
    tx.exec0("DELETE FROM processed_events WHERE event_id LIKE 'lat-%'");
    tx.exec0("DELETE FROM outreach_activities WHERE event_id LIKE 'lat-%'");
    tx.exec0("DELETE FROM pipeline_stages WHERE prospect_id LIKE 'lat-p-%'");
    tx.exec0("DELETE FROM prospects WHERE id LIKE 'lat-p-%'");
    tx.commit();
  }
  const Rows rows = read_rows(db);
  TestDatabase ceiling_db;
  const double copy_secs = write_with_copy(ceiling_db, rows);
  empty_tables(ceiling_db);
  const double insert_secs = write_with_inserts(ceiling_db, rows, 500);
  const double copy_rate = static_cast<double>(distinct) / copy_secs;
  const double insert_rate = static_cast<double>(distinct) / insert_secs;
  std::printf("ceiling:     %8.0f events/s  COPY of the %zu rows crm-worker wrote (%.1f s)\n", copy_rate, rows.count,
              copy_secs);
  std::printf("             %8.0f events/s  500-row INSERTs of the same rows (%.1f s)\n", insert_rate, insert_secs);

  std::printf("\n| figure | value |\n|---|---|\n");
  std::printf("| crm-worker, end to end | %.0f events/s |\n", worker_rate);
  std::printf("| peer (Python, one transaction per event) | %.0f events/s |\n", peer_rate);
  std::printf("| crm-worker / peer | %.1fx |\n", worker_rate / peer_rate);
  std::printf("| ceiling, 500-row INSERTs | %.0f events/s |\n", insert_rate);
  std::printf("| crm-worker / ceiling (INSERTs) | %.0f%% |\n", 100.0 * worker_rate / insert_rate);
  std::printf("| ceiling, COPY | %.0f events/s |\n", copy_rate);
  std::printf("| crm-worker / ceiling (COPY) | %.0f%% |\n", 100.0 * worker_rate / copy_rate);
  std::printf("| latency at %.0f events/s, p50 / p99 | %.1f / %.1f ms |\n", achieved, percentile(latency_ms, 0.50),
              percentile(latency_ms, 0.99));
  std::printf("| crm-worker peak RSS | %.1f MB |\n", rss_kb / 1024.0);
  return 0;
}

}  // namespace
}  // namespace crm::test

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each figure as soon as it is known
  return crm::test::run(crm::test::parse(argc, argv));
}
