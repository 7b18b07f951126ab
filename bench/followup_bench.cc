// Follow-up timers at depth: with N pending timers (default 100,000), how
// late the due ones fire (claimed_at − due_at, p50 / p99 / max, both on the
// database's clock) and what one claim and one "when is the next one" query
// cost. Prints figures; it asserts nothing (speed is a figure, not a test).
//
//   bench/run.sh followup [--timers N] [--window S] [--executors E] [--rounds R] [--explain]
//
// Part 1: N pending timers, 95% of them due over the next S seconds
// (default 30), the rest tomorrow; E executors (default 2) run until every
// timer of the window fired. Part 2: a fresh table with N pending timers,
// none due; R rounds (default 200, at most 90 s) of "4 come due, claim
// limit 1, claim limit 20, claim with none due, next_due_in", each timed
// from BEGIN to COMMIT; then how the table was read (--explain: the whole
// plans, from auto_explain).
//
// The timers are call reminders: they fire into the Slack outbox inside the
// claim's transaction, with no HTTP call (the notifier is not started), so
// the figures measure the timer machinery itself (claim, outbox insert,
// prospects.next_follow_up_at refresh, LISTEN/NOTIFY wake-ups, sleeps), not
// SendGrid or Slack.
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
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/config.h"
#include "daemon/followup_executor.h"
#include "daemon/logging.h"
#include "db/followups.h"
#include "monitoring/probes.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

constexpr int kProspects = 1000;
// What an executor configured with only a Slack webhook fires.
const std::vector<std::string> kSlackKinds = {"call_reminder", "stale_deal"};

struct Args {
  long long timers = 100000;
  double window_s = 30;
  int executors = 2;
  int rounds = 200;
  bool explain = false;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: followup_bench [--timers N] [--window SECONDS] [--executors E] "
               "[--rounds R] [--explain]\n");
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--explain") {
      a.explain = true;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    if (k == "--timers") a.timers = std::strtoll(v, nullptr, 10);
    else if (k == "--window") a.window_s = std::strtod(v, nullptr);
    else if (k == "--executors") a.executors = std::atoi(v);
    else if (k == "--rounds") a.rounds = std::atoi(v);
    else usage();
  }
  if (a.timers < 100 || a.window_s <= 0 || a.executors < 1 || a.rounds < 1) usage();
  return a;
}

// p in [0, 1] of sorted values (nearest rank).
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

struct Spread {
  double p50 = 0, p99 = 0, max = 0;
};

Spread spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {percentile(v, 0.5), percentile(v, 0.99), v.empty() ? 0 : v.back()};
}

void insert_prospects(pqxx::connection& c) {
  pqxx::work tx(c);
  tx.exec_params(
      "INSERT INTO prospects (id, name, email, company) "
      "SELECT 'p' || i, 'Prospect ' || i, 'p' || i || '@example.com', 'Company ' || (i % 97) "
      "FROM generate_series(0, $1 - 1) i",
      kProspects);
  tx.commit();
}

// `count` call reminders with ids <prefix><i>, i = 1..count, prospects
// p0..p999 in turn, due at now() + first_s + (i − 1) × step_s (the
// transaction's now()). One statement: the per-row NOTIFY trigger runs as
// in production, and its notifications fold into one at commit.
void insert_timers(pqxx::connection& c, const std::string& prefix, long long count, double first_s,
                   double step_s) {
  pqxx::work tx(c);
  tx.exec_params(
      "INSERT INTO followups (id, prospect_id, kind, due_at, call_id, source_time) "
      "SELECT $1 || i, 'p' || (i % $2), 'call_reminder', "
      "  now() + make_interval(secs => $3::float8 + (i - 1) * $4::float8), $1 || 'call-' || i, now() "
      "FROM generate_series(1, $5::bigint) i",
      prefix, kProspects, first_s, step_s, count);
  tx.commit();
}

void analyze(pqxx::connection& c) {
  pqxx::nontransaction tx(c);
  tx.exec("ANALYZE followups");
  tx.exec("ANALYZE prospects");
}

// ---------------------------------------------------------------------------
// Part 1: executors firing a window full of timers.

int fire_window(const Args& args) {
  // A few thousand far in the future stay pending throughout, so the due
  // index never empties; the rest come due over the window.
  const long long far = std::max<long long>(1, args.timers / 20);
  const long long in_window = args.timers - far;
  const double step_s = args.window_s / static_cast<double>(in_window);

  TestDatabase db;
  auto conn = db.connect();
  insert_prospects(*conn);
  auto t_far = Clock::now();
  insert_timers(*conn, "far-", far, 86400, 1);
  const double far_secs = seconds_since(t_far);
  // The window starts once the rest is inserted and the executors are up:
  // the lead is extrapolated from the first insert, with room to spare.
  const double insert_guess = far_secs * static_cast<double>(in_window) / static_cast<double>(far);
  const double lead_s = std::min(60.0, 2.0 + 1.5 * insert_guess);
  auto t_ins = Clock::now();
  insert_timers(*conn, "w-", in_window, lead_s, step_s);
  const double ins_secs = seconds_since(t_ins);
  // Autovacuum would analyze the new rows within its naptime; do it now so
  // the plans below are the ones a long-running daemon gets.
  analyze(*conn);

  std::printf("part 1: %lld pending timers (%lld due over %.0f s, %lld due tomorrow), "
              "%d executor(s), %d prospects, PostgreSQL %s\n",
              args.timers, in_window, args.window_s, far, args.executors, kProspects,
              db.scalar("SHOW server_version").c_str());
  std::printf("inserted:      %8.0f timers/s    (%.2f s, one INSERT ... generate_series)\n",
              in_window / ins_secs, ins_secs);

  Config config;
  // Slack only: the executor fires call reminders into the outbox; no
  // SendGrid key, so no email kind, and the notifier is never started, so
  // nothing goes over HTTP.
  config.slack.webhook_url = Secret("http://127.0.0.1:9/x");
  monitoring::Metrics metrics({}, {});
  // The executor logs one info line per fired timer; 100k lines on stderr
  // would be noise here (and would cost the same in production).
  log::set_level(log::Level::kWarn);

  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<FollowupExecutor>> executors;
  std::vector<std::thread> threads;
  for (int i = 0; i < args.executors; ++i) {
    executors.push_back(std::make_unique<FollowupExecutor>(config, db.conninfo(), metrics,
                                                           "bench-" + std::to_string(i + 1)));
  }
  for (auto& e : executors) threads.emplace_back([&stop, ex = e.get()] { ex->run(stop); });

  const double first_due_in =
      std::stod(db.scalar("SELECT extract(epoch FROM min(due_at) - now()) FROM followups "
                          "WHERE id LIKE 'w-%'"));
  std::printf("first due:     %8.2f s after the executors started%s\n", first_due_in,
              first_due_in < 0 ? "  (NEGATIVE: the insert outran the lead; early lateness is inflated)"
                               : "");

  // Done when no timer of the window is left pending (the far ones are due
  // tomorrow). The (status, due_at) index answers this without reading the
  // fired rows.
  const auto deadline = Clock::now() + std::chrono::duration<double>(lead_s + args.window_s + 180);
  auto t0 = Clock::now();
  long long left = in_window;
  while (Clock::now() < deadline) {
    pqxx::work tx(*conn);
    left = tx.exec1("SELECT count(*) FROM followups WHERE status IN ('scheduled', 'sending') "
                    "AND due_at < now() + interval '1 hour'")[0]
               .as<long long>();
    tx.commit();
    if (left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double run_secs = seconds_since(t0);
  stop.store(true);
  for (auto& t : threads) t.join();
  executors.clear();

  pqxx::work tx(*conn);
  const pqxx::row r = tx.exec1(
      "SELECT count(*), "
      "  COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY l), 0), "
      "  COALESCE(percentile_cont(0.99) WITHIN GROUP (ORDER BY l), 0), "
      "  COALESCE(max(l), 0), COALESCE(min(l), 0), "
      "  COALESCE(extract(epoch FROM max(claimed_at) - min(claimed_at)), 0) "
      "FROM (SELECT (extract(epoch FROM claimed_at - due_at) * 1000)::float8 AS l, claimed_at "
      "      FROM followups WHERE id LIKE 'w-%' AND status = 'sent') s");
  const long long fired = r[0].as<long long>();
  const long long outbox = tx.exec1("SELECT count(*) FROM notifications WHERE id LIKE 'followup:w-%'")[0]
                               .as<long long>();
  const long long far_fired =
      tx.exec1("SELECT count(*) FROM followups WHERE id LIKE 'far-%' AND status <> 'scheduled'")[0]
          .as<long long>();
  tx.commit();

  std::printf("fired:         %8lld of %lld  (%lld Slack outbox rows; %lld far timers touched; "
              "%.1f s until none was left, from the start)\n",
              fired, in_window, outbox, far_fired, run_secs);
  std::printf("firing rate:   %8.0f timers/s    (first to last claim, %.2f s; due rate %.0f/s)\n",
              r[5].as<double>() > 0 ? fired / r[5].as<double>() : 0.0, r[5].as<double>(),
              in_window / args.window_s);
  std::printf("lateness:      p50 %.1f ms   p99 %.1f ms   max %.1f ms   min %.1f ms  "
              "(claimed_at − due_at, database clock)\n",
              r[1].as<double>(), r[2].as<double>(), r[3].as<double>(), r[4].as<double>());
  if (left != 0) {
    std::fprintf(stderr, "%lld timers of the window still pending at the deadline\n", left);
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Part 2: one claim and one next_due_in against a deep table.

// Collects the LOG messages auto_explain sends to this session.
class PlanCollector : public pqxx::errorhandler {
 public:
  explicit PlanCollector(pqxx::connection_base& c) : pqxx::errorhandler(c) {}
  bool operator()(const char msg[]) noexcept override {
    try {
      text_ += msg;
    } catch (...) {
    }
    return false;
  }
  std::string take() { return std::exchange(text_, {}); }

 private:
  std::string text_;
};

// The plan lines that say how the followups table was read: a sequential
// scan, or how many entries of the due index were walked, and the filters
// that threw rows away (with the node that did), costs left out.
std::vector<std::string> scan_lines(const std::string& plan) {
  std::vector<std::string> out;
  std::string node;  // the last plan node seen: "Nested Loop", ...
  size_t pos = 0;
  while (pos < plan.size()) {
    size_t end = plan.find('\n', pos);
    if (end == std::string::npos) end = plan.size();
    std::string line = plan.substr(pos, end - pos);
    pos = end + 1;
    line.erase(0, std::min(line.size(), line.find_first_not_of(" ->")));
    const size_t cost = line.find("  (cost=");
    if (cost != std::string::npos) {
      const size_t actual = line.find("(actual", cost);
      node = line.substr(0, cost);
      const std::string brief =
          node + (actual == std::string::npos ? "" : "  " + line.substr(actual));
      if (node.find("Seq Scan on followups") != std::string::npos ||
          node.find("followups_due_idx") != std::string::npos) {
        out.push_back(brief);
      }
    } else if (line.rfind("Rows Removed by", 0) == 0) {
      out.push_back(node + ": " + line);
    }
  }
  return out;
}

// Runs `body` once with auto_explain (ANALYZE) on, and prints the scans of
// followups in the plans it logged (all of them with --explain).
template <typename Body>
void show_plan(pqxx::connection& c, const char* what, bool full, Body body) {
  PlanCollector plans(c);
  {
    pqxx::nontransaction tx(c);
    tx.exec("LOAD 'auto_explain'");
    tx.exec("SET auto_explain.log_min_duration = 0");
    tx.exec("SET auto_explain.log_analyze = on");
    tx.exec("SET auto_explain.log_buffers = on");
    tx.exec("SET auto_explain.log_timing = on");
    tx.exec("SET client_min_messages = log");
  }
  body();
  {
    pqxx::nontransaction tx(c);
    tx.exec("SET auto_explain.log_min_duration = -1");
    tx.exec("RESET client_min_messages");
  }
  const std::string text = plans.take();
  if (full) {
    std::printf("---- plan: %s ----\n%s\n", what, text.c_str());
    return;
  }
  const std::vector<std::string> lines = scan_lines(text);
  if (lines.empty()) {
    std::printf("  plan %-13s (auto_explain gave no plan)\n", what);
    return;
  }
  for (const std::string& l : lines) std::printf("  plan %-13s %s\n", what, l.c_str());
}

int claim_cost(const Args& args) {
  TestDatabase db;
  auto conn = db.connect();
  insert_prospects(*conn);
  // Pending, none due: from one hour on, spread over a day.
  insert_timers(*conn, "deep-", args.timers, 3600, 86400.0 / static_cast<double>(args.timers));
  analyze(*conn);

  db::ClaimOptions claim;
  claim.kinds = kSlackKinds;
  claim.owner = "bench";

  constexpr int kDuePerRound = 4;
  auto add_due = [&](int round) {
    pqxx::work tx(*conn);
    tx.exec_params(
        "INSERT INTO followups (id, prospect_id, kind, due_at, call_id, source_time) "
        "SELECT 'due-' || $1::int || '-' || i, 'p' || ((i * 37 + $1::int) % $2), 'call_reminder', "
        "  now() - interval '1 second', 'due-call-' || $1::int || '-' || i, now() - interval '1 hour' "
        "FROM generate_series(1, $3) i",
        round, kProspects, kDuePerRound);
    tx.commit();
  };
  // One claim in its own transaction, as the executor makes it; timed from
  // BEGIN to COMMIT.
  auto timed_claim = [&](int limit, size_t* fired) {
    claim.limit = limit;
    auto t = Clock::now();
    pqxx::work tx(*conn);
    db::ClaimResult res = db::claim_due(tx, claim);
    tx.commit();
    *fired += res.fired.size();
    return micros_since(t);
  };
  auto timed_next_due = [&] {
    auto t = Clock::now();
    pqxx::work tx(*conn);
    std::optional<Millis> next = db::next_due_in(tx, kSlackKinds);
    tx.commit();
    (void)next;
    return micros_since(t);
  };

  std::vector<double> one, twenty, empty, next;
  size_t fired_one = 0, fired_twenty = 0, fired_empty = 0;
  // Bounded in time as well as in rounds: a slow claim must not turn the
  // bench into a soak test.
  const auto budget_end = Clock::now() + std::chrono::seconds(90);
  int rounds = 0;
  for (; rounds < args.rounds && Clock::now() < budget_end; ++rounds) {
    add_due(rounds);
    one.push_back(timed_claim(1, &fired_one));        // 4 due: takes 1, a full claim
    twenty.push_back(timed_claim(20, &fired_twenty)); // 3 due: takes 3, not full
    empty.push_back(timed_claim(20, &fired_empty));   // none due: the idle look
    next.push_back(timed_next_due());
  }

  std::printf("part 2: %lld pending timers, none due; per round %d come due, then one claim of "
              "each kind, each in its own transaction (%d rounds)\n",
              args.timers, kDuePerRound, rounds);
  const Spread s1 = spread(one), s20 = spread(twenty), s0 = spread(empty), sn = spread(next);
  std::printf("claim limit 1:  p50 %8.0f µs  p99 %8.0f µs  max %8.0f µs  (%zu fired)\n", s1.p50,
              s1.p99, s1.max, fired_one);
  std::printf("claim limit 20: p50 %8.0f µs  p99 %8.0f µs  max %8.0f µs  (%zu fired, %d due each)\n",
              s20.p50, s20.p99, s20.max, fired_twenty, kDuePerRound - 1);
  std::printf("claim, none due:p50 %8.0f µs  p99 %8.0f µs  max %8.0f µs  (%zu fired)\n", s0.p50,
              s0.p99, s0.max, fired_empty);
  std::printf("next_due_in:    p50 %8.0f µs  p99 %8.0f µs  max %8.0f µs\n", sn.p50, sn.p99, sn.max);
  // An idle executor looks once per kMaxWait (1 s): one empty claim and one
  // next_due_in (daemon/followup_executor.cc).
  std::printf("idle executor:  %.1f ms of database time per second (one empty claim + one "
              "next_due_in per 1 s wait)\n",
              (s0.p50 + sn.p50) / 1000.0);

  // How the table is read, with the real parameters (auto_explain sees the
  // statement exactly as claim_due and next_due_in send it).
  add_due(rounds);
  show_plan(*conn, "claim(20):", args.explain, [&] {
    size_t ignored = 0;
    timed_claim(20, &ignored);
  });
  show_plan(*conn, "next_due_in:", args.explain, [&] { timed_next_due(); });
  return 0;
}

int run(const Args& args) {
  std::printf("followup_bench: %u cores (std::thread::hardware_concurrency)\n",
              std::thread::hardware_concurrency());
  std::printf("(call reminders: fired into the Slack outbox in the claim's transaction, no HTTP; "
              "this measures the timer machinery, not SendGrid)\n");
  int rc = fire_window(args);
  int rc2 = claim_cost(args);
  return rc != 0 ? rc : rc2;
}

}  // namespace
}  // namespace crm::test

int main(int argc, char** argv) {
  // Line by line: the figures show up as each part ends, also when piped.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return crm::test::run(crm::test::parse(argc, argv));
}
