#pragma once
// The fault scenarios of TESTPLAN.md: one Scenario is a private PostgreSQL
// cluster (which the scenario may crash and restart) with a database behind
// production's roles, the dev broker with three brokers, a seeded stream of
// outreach events with duplicates, shuffled across and within partitions,
// plus the poison set, a producer ledger of every acknowledged message, and
// the checks every scenario ends with:
//
//   no loss          every acknowledged event id is in processed_events, every
//                    acknowledged poison message in dead_letters
//   no double effect no event_id twice in outreach_activities
//   one final state  the outreach tables equal the oracle's: the distinct
//                    events applied once each, in time order, by the same
//                    projection code, into a database of its own
//   counters         processed events per type equal a recount of the
//                    distinct events
//   dead letters     exactly the injected poison, each with its reason,
//                    topic, partition and offset, and each published to the
//                    dead-letter topic
//   offsets          the group's committed offsets reach the end of every
//                    partition (nothing left to redo, nothing skipped)
//
// and a figures line ("produced 2,000 + 610 duplicates + 24 poison; applied
// 2,000; doubled 0; ...; after 6 kill -9"). Every run prints its seed;
// CRM_SCENARIO_SEED=<n> replays one. CRM_SCENARIO_SCALE=full runs the full
// sizes (ctest label `full`, scripts/test.sh --full).

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/harness/harness.h"
#include "tests/harness/outreach_history.h"

namespace crm::test {

// A scripts/pg.sh cluster of the scenario's own, so that stopping it
// disturbs no other test. A restart keeps its port.
class PgCluster {
 public:
  PgCluster();
  ~PgCluster();
  const std::string& dir() const { return dir_; }
  // Its TCP port on 127.0.0.1 (kept across restarts).
  int port() const;
  // pg_ctl stop -m immediate (a crash: no checkpoint, clients cut) or fast.
  void halt(bool immediate);
  void start();
  // Runs SQL as the superuser in database `db` ("" = postgres).
  void exec(const std::string& sql, const std::string& db = "") const;

 private:
  std::string dir_;
};

// One poison message and the dead-letter reason it must get.
struct PoisonMessage {
  Producer::OutMessage message;
  std::string reason;
};

// TESTPLAN's poison set, for a worker whose [consumer] caps are
// kScenarioCaps: the 10 MB string and the million-element array become a
// string and an array over those caps (the broker's own message limit is
// 1 MB), which takes the same path.
std::vector<PoisonMessage> poison_set();
inline constexpr const char* kScenarioCaps =
    "[consumer]\nmax_message_bytes = 262144\nmax_string_bytes = 65536\n";

struct ScenarioOptions {
  std::string name = "";
  // Prospects in the history (about 15 events each); CRM_SCENARIO_SCALE=full
  // multiplies it by `full_factor`.
  int prospects = 60;
  int full_factor = 10;
  int brokers = 3;
  int partitions = 6;
  bool poison = true;
  // Share of distinct events sent again 1-3 times; two events are sent 40
  // times besides (as SendGrid does).
  int duplicate_percent = 25;
  // "range" or "cooperative-sticky".
  std::string assignment = "range";
  // Run the executors (follow-ups, sync, notifications). Their work queues
  // (followups, notifications, sync_queue) then move on from what the events
  // left, so the oracle compares every other table, and the scenario checks
  // the queues against its fakes' ledgers itself. The worker needs the fake
  // APIs' addresses in `worker_config` or the environment. check() holds
  // only until an API call succeeds: a sent email is an event of its own
  // (processed_events, the timeline, the counters), and a sync writes
  // HubSpot's ids back.
  bool executors = false;
  // Appended to every worker's configuration (TOML, after the scenario's
  // own tables).
  std::string worker_config = "";
  // TOML lines for the workers' [kafka.properties] ("\"name\" = \"value\"\n");
  // they replace the harness's own values of those names.
  std::string kafka_properties = "";
  // Messages that kill the worker every time it decodes them (crm.prospect.
  // discovered events with ids "crash-pill-<n>", which every worker of the
  // scenario is told to die on: CRM_WORKER_CRASH_ON_EVENT). They are
  // poison whose dead-letter reason must be crashed_worker.
  int crash_pills = 0;
  // The workers' consumer.crash_attempts (0: the default). Scenarios that
  // kill workers at crash points raise it: a worker killed while applying
  // one message on its own is, to the guard, a message that kills workers.
  int crash_attempts = 0;
};

// The event id prefix of ScenarioOptions::crash_pills.
inline constexpr const char* kCrashPillPrefix = "crash-pill-";

class Scenario {
 public:
  explicit Scenario(ScenarioOptions options);
  ~Scenario();

  // True under CRM_SCENARIO_SCALE=full.
  static bool full();
  // `reduced`, or `full_size` under CRM_SCENARIO_SCALE=full.
  static int scaled(int reduced, int full_size) { return full() ? full_size : reduced; }

  unsigned seed() const { return seed_; }
  std::mt19937& rng() { return rng_; }
  PgCluster& pg() { return *pg_; }
  TestDatabase& db() { return *db_; }
  DevBrokerProcess& broker() { return *broker_; }
  const ScenarioOptions& options() const { return options_; }

  // A crm-worker run process on the runtime role, with the scenario's
  // configuration plus `extra_toml` and `env`.
  std::unique_ptr<WorkerProcess> start_worker(std::map<std::string, std::string> env = {},
                                              const std::string& extra_toml = "");

  // The stream: distinct events, duplicates and poison, shuffled.
  size_t stream_size() const { return stream_.size(); }
  size_t distinct_events() const { return events_.size(); }
  // Publishes the next `count` messages of the stream (all that are left by
  // default) and records each acknowledgement; returns how many were
  // acknowledged. Messages not acknowledged are sent again by the next call.
  size_t publish(size_t count = SIZE_MAX);
  bool all_published() const { return next_ == stream_.size(); }
  // Publishes the stream in `parts` parts, calling `between(k)` once part k
  // has begun to apply (or after 30 s), then publishes what is left.
  void publish_in_parts(int parts, const std::function<void(int)>& between);

  // Counts the scenario's figures line reports under "after".
  void note_fault(const std::string& what, int times = 1) { faults_[what] += times; }

  // Waits until every acknowledged message is accounted for and the
  // group's offsets are committed to the end of every partition.
  // With `offsets` false, only the first (for a scenario whose workers
  // commit offsets rarely).
  bool wait_settled(std::chrono::seconds timeout, bool offsets = true);
  // Applied events and dead letters so far (for waits within a scenario).
  long long applied() const;

  // Runs the checks above (failing the test on any) and prints the figures.
  void check();

  // A digest of every table, volatile columns included (except a dead
  // letter's delivery count and last failure time): equal texts mean no row
  // changed.
  std::string every_row() const;

 private:
  struct Message {
    Producer::OutMessage out;
    std::string event_id;       // "" for poison
    std::string poison_reason;  // "" for an event
    Producer::Delivery delivery;
  };

  ScenarioOptions options_;
  unsigned seed_;
  std::mt19937 rng_;
  std::unique_ptr<PgCluster> pg_;
  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<DevBrokerProcess> broker_;
  std::unique_ptr<Producer> producer_;
  HistoryShape shape_;
  std::vector<HistoryEvent> events_;
  std::vector<Message> stream_;
  size_t next_ = 0;
  std::map<std::string, int> faults_;
};

// The committed offset of `group` and the high watermark of every partition
// of `topics`: {committed, end} per "topic/partition" (committed is 0 where
// the group has committed nothing).
std::map<std::string, std::pair<long long, long long>> group_positions(
    const std::string& bootstrap, const std::string& group, const std::vector<std::string>& topics);

// ---------------------------------------------------------------------------
// The checks of the executors' work (TESTPLAN "Checks after every scenario":
// emails, HubSpot, bounded retries, nothing stuck), against the fake APIs'
// ledgers, for scenarios run with `executors` and for any test that runs
// the executors on a TestDatabase. Each fails the test on what it finds and
// returns its figures. Call them once the executors have stopped, or the
// ledgers and the tables may disagree by a request in flight. Defined in
// scenario_checks.cc.

struct Received;
class FakeHubspot;

// Emails: SendGrid's ledger against the followups table. `requests` is every
// /v3/mail/send request the fake received, `accepted` the ones it answered
// 2xx. At most one accepted email per follow-up; exactly one for a row
// `sent`, none for a `scheduled`, `cancelled` or `dead` one (a `sending` or
// `failed` one, in doubt, may have one); no more requests for a follow-up
// than its attempts (one request per claim); no email for a follow-up the
// table does not have.
struct EmailFigures {
  long long due = 0;        // email follow-ups due by now and not cancelled
  long long sent = 0;
  long long dead = 0;       // refused for good, or out of attempts
  long long exhausted = 0;  // of the dead: out of attempts
  long long in_doubt = 0;   // `failed`
  long long requests = 0;
  long long accepted = 0;
};
EmailFigures check_emails(const TestDatabase& db, const std::vector<Received>& requests,
                          const std::vector<Received>& accepted);

// HubSpot: the fake's state equals our ids, both ways. Every entity whose
// last sync job completed is live there under the id our row holds (or, for
// a delete, not live); every live object there is the one our row names;
// every company link our rows record is an association there. And the rate
// limit: no more than `limit` requests (all of them, refused ones
// included) in any of the fake's rolling intervals, none refused by its
// limiter.
struct HubspotFigures {
  long long synced = 0;  // entities whose last job completed
  long long live = 0;    // live objects in the fake
  long long requests = 0;
  int max_in_interval = 0;
};
HubspotFigures check_hubspot(const TestDatabase& db, FakeHubspot& hubspot, int limit);

// Slack: at most one message per second for every instance together, and
// an accepted request behind every notification `sent` (more accepted than
// sent is Slack's at-least-once after a crash; a caller without crashes
// expects them equal). The second is taken when a notification is claimed
// and its request leaves a moment later, so the check allows each request
// `leave_ms` of delay: any k consecutive requests span at least
// (k - 1) s - `leave_ms`. Without the shared slot, a backlog goes out
// milliseconds apart.
struct SlackFigures {
  long long requests = 0;
  long long accepted = 0;
  long long sent = 0;
  long long min_gap_ms = -1;  // between consecutive requests; -1: fewer than two
};
SlackFigures check_slack(const TestDatabase& db, const std::vector<Received>& requests,
                         const std::vector<Received>& accepted, long long leave_ms = 500);

// Bounded retries: no follow-up, sync job or notification made more than
// `max_attempts` attempts, and none that made them all is still waiting for
// another (it is `dead`, or done). Returns the most attempts of any row.
int check_bounded_retries(const TestDatabase& db, int max_attempts);

// Nothing stuck: no `sending` follow-up or notification and no `in_progress`
// sync job whose lease has run out by the database's clock. (A follow-up
// left `sending` by a crash is such a row until its executor's next report,
// every 5 s, marks it in doubt.) Returns the rows still within their lease.
long long check_nothing_stuck(const TestDatabase& db);

}  // namespace crm::test
