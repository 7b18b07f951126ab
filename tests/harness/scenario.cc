#include "tests/harness/scenario.h"

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "daemon/applier.h"
#include "daemon/config.h"
#include "db/database.h"
#include "tests/harness/source_tree.h"

namespace crm::test {
namespace {

const std::string kOutreach = "crm.outreach.events";
const std::string kSendgrid = "sendgrid.events";
const std::string kDeadLetter = "crm.dead-letter";
const std::string kGroup = "crm-worker";

// The worker's Slack webhook: the projections queue notifications only when
// one is configured, so the oracle must be told the same. Nothing listens
// there (the executors are off).
const std::string kSlackWebhook = "http://127.0.0.1:9/hooks/scenario";

std::string run_pg_script(const std::vector<std::string>& args) {
  TempDir out;
  std::vector<std::string> argv{"/bin/bash", (source_root() / "scripts" / "pg.sh").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, {}, out.file("pg.log"));
  auto code = p.wait(120s);
  if (code != 0) throw std::runtime_error("scripts/pg.sh " + args[0] + " failed: " + p.log());
  return p.log();
}

std::string with_commas(long long n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string position(const std::string& topic, long long partition, long long offset) {
  return topic + "/" + std::to_string(partition) + "@" + std::to_string(offset);
}

// A CloudEvent with the given attributes; `data` is raw JSON text.
std::string cloud(const std::string& id, const std::string& type, const std::string& data,
                  const std::string& time = "2026-03-01T10:00:00Z") {
  return R"({"specversion":"1.0","id":")" + id + R"(","source":"scenario","type":")" + type +
         R"(","time":")" + time + R"(","data":)" + data + "}";
}

// The lines of outreach_tables() text, sorted, without the sections of
// `skipped` tables.
std::vector<std::string> lines_of(const std::string& text, const std::set<std::string>& skipped) {
  std::vector<std::string> out;
  std::istringstream in(text);
  bool skipping = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("== ", 0) == 0) skipping = skipped.count(line.substr(3)) > 0;
    if (!skipping) out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------

PgCluster::PgCluster() {
  std::filesystem::create_directories(CRM_TEST_STATE_DIR);
  std::random_device rd;
  char name[32];
  std::snprintf(name, sizeof name, "/pg-%08x", rd());
  dir_ = std::string(CRM_TEST_STATE_DIR) + name;
  run_pg_script({"start", dir_});
}

PgCluster::~PgCluster() {
  try {
    run_pg_script({"stop", dir_});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
  }
}

void PgCluster::halt(bool immediate) { run_pg_script({"halt", dir_, immediate ? "immediate" : "fast"}); }

int PgCluster::port() const { return std::atoi(read_file(dir_ + "/port").c_str()); }

void PgCluster::start() { run_pg_script({"start", dir_}); }

void PgCluster::exec(const std::string& sql, const std::string& db) const {
  std::string conninfo = read_file(dir_ + "/conninfo");
  while (!conninfo.empty() && conninfo.back() == '\n') conninfo.pop_back();
  if (!db.empty()) conninfo += " dbname=" + db;  // the last dbname= wins
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

// ---------------------------------------------------------------------------

std::vector<PoisonMessage> poison_set() {
  auto outreach = [](std::string value, std::string reason, Producer::Headers headers = {}) {
    return PoisonMessage{{kOutreach, "poison", std::move(value), std::move(headers)}, std::move(reason)};
  };
  auto sendgrid = [](std::string value, std::string reason) {
    return PoisonMessage{{kSendgrid, "poison", std::move(value), {}}, std::move(reason)};
  };
  const std::string discovered = R"({"prospect_id":"poison-p","name":"N"})";
  std::vector<PoisonMessage> out = {
      outreach("", "empty"),
      outreach("not json at all", "not_json"),
      outreach(cloud("poison-trunc", "crm.prospect.discovered", discovered).substr(0, 60), "not_json"),
      outreach(cloud("poison-utf8", "crm.prospect.discovered",
                     "{\"prospect_id\":\"poison-p\",\"name\":\"\xC0\xAF\"}"),
               "invalid_utf8"),
      outreach("\xEF\xBB\xBF" + cloud("poison-bom", "crm.prospect.discovered", discovered), "not_json"),
      outreach(cloud("poison-nul", "crm.prospect.discovered", R"({"prospect_id":"poison-p","name":"a\u0000b"})"),
               "nul_in_string"),
      outreach(cloud("poison-surrogate", "crm.prospect.discovered",
                     R"({"prospect_id":"poison-p","name":"\ud800"})"),
               "invalid_utf8"),
      outreach(std::string(100000, '[') + std::string(100000, ']'), "too_deep"),
      outreach(cloud("poison-long", "crm.prospect.discovered",
                     R"({"prospect_id":"poison-p","name":")" + std::string(70000, 'x') + "\"}"),
               "too_large"),
      outreach(R"({"specversion":"1.0","id":"poison-dup","id":"other","source":"s","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"poison-p","name":"N"}})",
               "duplicate_key"),
      outreach(cloud("poison-inf", "crm.prospect.discovered", R"({"prospect_id":"poison-p","name":"N","score":1e999})"),
               "not_json"),
      outreach(cloud("poison-nan", "crm.prospect.discovered", R"({"prospect_id":"poison-p","name":NaN})"), "not_json"),
      outreach(R"({"specversion":"0.3","id":"poison-spec","source":"s","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"poison-p","name":"N"}})",
               "bad_specversion"),
      outreach(R"({"specversion":"1.0","source":"s","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"poison-p","name":"N"}})",
               "missing_field"),
      outreach(R"({"specversion":"1.0","id":"poison-notype","source":"s","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"poison-p","name":"N"}})",
               "missing_field"),
      outreach(R"({"specversion":"1.0","id":"poison-nosource","type":"crm.prospect.discovered","time":"2026-03-01T10:00:00Z","data":{"prospect_id":"poison-p","name":"N"}})",
               "missing_field"),
      outreach(cloud("poison-time", "crm.prospect.discovered", discovered, "yesterday at noon"), "bad_time"),
      outreach(cloud("poison-type", "crm.no.such.type", "{}"), "unknown_type"),
      outreach(cloud("poison-data", "crm.prospect.discovered", "[1,2]"), "wrong_type"),
      outreach(cloud("poison-field", "crm.prospect.discovered", R"({"name":"N"})"), "missing_field"),
      outreach(cloud("poison-field-type", "crm.prospect.discovered", R"({"prospect_id":42,"name":"N"})"),
               "wrong_type"),
      // Binary mode: ce_specversion names it, then an attribute is missing,
      // or one is given twice.
      outreach(discovered, "missing_field",
               {{"ce_specversion", "1.0"}, {"ce_source", "s"}, {"ce_type", "crm.prospect.discovered"},
                {"ce_time", "2026-03-01T10:00:00Z"}}),
      outreach(discovered, "bad_headers",
               {{"ce_specversion", "1.0"}, {"ce_id", "poison-bin-a"}, {"ce_id", "poison-bin-b"},
                {"ce_source", "s"}, {"ce_type", "crm.prospect.discovered"}, {"ce_time", "2026-03-01T10:00:00Z"}}),
      sendgrid(R"([{"email":"x@example.com","timestamp":1772359200,"event":"open","sg_message_id":"m.1"}])",
               "missing_field"),
  };
  // Over max_batch_elements (10,000).
  std::string many = "[0";
  for (int i = 1; i < 20000; ++i) many += ",0";
  out.push_back(sendgrid(many + "]", "too_many_elements"));
  return out;
}

// ---------------------------------------------------------------------------

bool Scenario::full() {
  const char* scale = std::getenv("CRM_SCENARIO_SCALE");
  return scale != nullptr && std::string(scale) == "full";
}

Scenario::Scenario(ScenarioOptions options) : options_(std::move(options)) {
  const char* fixed = std::getenv("CRM_SCENARIO_SEED");
  seed_ = fixed != nullptr ? static_cast<unsigned>(std::strtoul(fixed, nullptr, 10)) : std::random_device{}();
  rng_.seed(seed_);
  std::printf("scenario %s: seed %u (replay with CRM_SCENARIO_SEED=%u)\n", options_.name.c_str(), seed_, seed_);
  std::fflush(stdout);

  pg_ = std::make_unique<PgCluster>();
  db_ = std::make_unique<TestDatabase>(DatabaseOptions{.pg_dir = pg_->dir(), .roles = true});
  shape_.prospects = options_.prospects * (full() ? options_.full_factor : 1);
  seed_web_app_rows(*db_, shape_);
  broker_ = std::make_unique<DevBrokerProcess>(options_.brokers, options_.partitions);
  producer_ = std::make_unique<Producer>(broker_->bootstrap());

  events_ = outreach_history(seed_, shape_);
  for (const HistoryEvent& e : events_) {
    Message m{{e.topic, e.key, e.value, {}}, e.id, "", {}};
    stream_.push_back(m);
    if (static_cast<int>(rng_() % 100) < options_.duplicate_percent) {
      for (int copies = 1 + static_cast<int>(rng_() % 3); copies > 0; --copies) stream_.push_back(m);
    }
  }
  for (int storm = 0; storm < 2; ++storm) {
    const HistoryEvent& e = events_[rng_() % events_.size()];
    for (int i = 0; i < 40; ++i) stream_.push_back(Message{{e.topic, e.key, e.value, {}}, e.id, "", {}});
  }
  if (options_.poison) {
    for (PoisonMessage& p : poison_set()) stream_.push_back(Message{std::move(p.message), "", p.reason, {}});
  }
  for (int k = 0; k < options_.crash_pills; ++k) {
    const std::string id = kCrashPillPrefix + std::to_string(k);
    const std::string key = "pill-" + std::to_string(k);
    stream_.push_back(Message{{kOutreach, key,
                               cloud(id, "crm.prospect.discovered",
                                     R"({"prospect_id":")" + key + R"(","name":"Pill"})"),
                               {}},
                              "", "crashed_worker", {}});
  }
  std::shuffle(stream_.begin(), stream_.end(), rng_);
}

Scenario::~Scenario() = default;

std::unique_ptr<WorkerProcess> Scenario::start_worker(std::map<std::string, std::string> env,
                                                      const std::string& extra_toml) {
  env.emplace("CRM_WORKER_SLACK_WEBHOOK_URL", kSlackWebhook);
  if (options_.crash_pills > 0) env.emplace("CRM_WORKER_CRASH_ON_EVENT", kCrashPillPrefix);
  // The history's follow-ups and sync requests are the events' business
  // here; the executors' scenarios have their own fakes.
  std::string config = "\"partition.assignment.strategy\" = \"" + options_.assignment + "\"\n" +
                       options_.kafka_properties + kScenarioCaps + "batch_max_events = 50\n" +
                       (options_.crash_attempts > 0 ? "crash_attempts = " + std::to_string(options_.crash_attempts) + "\n"
                                                    : std::string()) +
                       "[executors]\nenabled = " + (options_.executors ? "true" : "false") +
                       "\n[lead_score]\nthreshold = 40\n" +
                       options_.worker_config + "\n" + extra_toml;
  return std::make_unique<WorkerProcess>(*db_, broker_->bootstrap(), std::move(env), config);
}

size_t Scenario::publish(size_t count) {
  // Unacknowledged messages before next_ go out again first.
  std::vector<size_t> which;
  for (size_t i = 0; i < next_; ++i) {
    if (stream_[i].delivery.offset < 0) which.push_back(i);
  }
  for (size_t n = 0; n < count && next_ < stream_.size(); ++n) which.push_back(next_++);
  std::vector<Producer::OutMessage> out;
  out.reserve(which.size());
  for (size_t i : which) out.push_back(stream_[i].out);
  std::vector<Producer::Delivery> deliveries = producer_->publish(out);
  size_t acked = 0;
  for (size_t k = 0; k < which.size(); ++k) {
    stream_[which[k]].delivery = deliveries[k];
    acked += deliveries[k].offset >= 0;
  }
  return acked;
}

void Scenario::publish_in_parts(int parts, const std::function<void(int)>& between) {
  auto applied_or_zero = [&] {
    try {
      return applied();
    } catch (const std::exception&) {
      return 0LL;  // the database is down in the middle of a scenario
    }
  };
  for (int k = 0; k < parts; ++k) {
    const long long before = applied_or_zero();
    publish(stream_size() / static_cast<size_t>(parts) + 1);
    wait_until([&] { return applied_or_zero() > before; }, 30s);
    between(k);
  }
  publish();
}

long long Scenario::applied() const {
  return db_->count("SELECT (SELECT count(*) FROM processed_events) + (SELECT count(*) FROM dead_letters)");
}

std::map<std::string, std::pair<long long, long long>> group_positions(
    const std::string& bootstrap, const std::string& group, const std::vector<std::string>& topics) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  // The group's id, but no subscription: reading its committed offsets
  // (OffsetFetch) does not join it.
  rd_kafka_conf_set(conf, "group.id", group.c_str(), err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk == nullptr) throw std::runtime_error(err);
  std::map<std::string, std::pair<long long, long long>> out;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(32);
  for (const std::string& topic : topics) {
    rd_kafka_topic_t* t = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
      for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
        rd_kafka_topic_partition_list_add(list, topic.c_str(), md->topics[0].partitions[p].id);
      }
    }
    if (md != nullptr) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
  }
  if (rd_kafka_committed(rk, list, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < list->cnt; ++i) {
      const rd_kafka_topic_partition_t& tp = list->elems[i];
      int64_t low = 0, high = -1;
      rd_kafka_query_watermark_offsets(rk, tp.topic, tp.partition, &low, &high, 5000);
      // No commit yet means "from the start": an empty partition is done.
      out[std::string(tp.topic) + "/" + std::to_string(tp.partition)] = {std::max<int64_t>(tp.offset, 0), high};
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  return out;
}

bool Scenario::wait_settled(std::chrono::seconds timeout, bool offsets) {
  std::set<std::string> ids;
  long long poison = 0;
  std::set<std::string> topics;
  for (const Message& m : stream_) {
    if (m.delivery.offset < 0) continue;
    topics.insert(m.out.topic);
    if (m.event_id.empty()) {
      poison++;
    } else {
      ids.insert(m.event_id);
    }
  }
  const std::vector<std::string> topic_list(topics.begin(), topics.end());
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    bool done = false;
    try {
      done = db_->count("SELECT count(*) FROM processed_events") == static_cast<long long>(ids.size()) &&
             db_->count("SELECT count(DISTINCT (topic, partition, \"offset\")) FROM dead_letters") == poison;
      if (done && offsets) {
        for (const auto& [tp, pos] : group_positions(broker_->bootstrap(), kGroup, topic_list)) {
          done = done && pos.first == pos.second;
        }
      }
    } catch (const std::exception&) {
      done = false;  // the database may be down in the middle of a scenario
    }
    if (done) return true;
    std::this_thread::sleep_for(300ms);
  }
  return false;
}

void Scenario::check() {
  // What the producer's ledger says was acknowledged.
  std::set<std::string> acked_ids;
  std::map<std::string, std::string> acked_poison;  // position → reason
  std::set<std::string> topics;
  long long duplicates = 0;
  std::map<std::string, int> copies;
  for (const Message& m : stream_) {
    if (m.delivery.offset < 0) continue;
    topics.insert(m.out.topic);
    if (m.event_id.empty()) {
      acked_poison[position(m.out.topic, m.delivery.partition, m.delivery.offset)] = m.poison_reason;
    } else if (!acked_ids.insert(m.event_id).second) {
      duplicates++;
    }
  }
  EXPECT_EQ(acked_ids.size(), events_.size()) << "every distinct event must have been acknowledged once";

  auto conn = db_->connect();
  pqxx::nontransaction tx(*conn);

  // No loss.
  std::set<std::string> processed;
  for (const auto& row : tx.exec("SELECT event_id FROM processed_events")) processed.insert(row[0].c_str());
  long long lost = 0;
  for (const std::string& id : acked_ids) {
    if (!processed.count(id)) {
      if (++lost <= 5) ADD_FAILURE() << "lost: event " << id << " is in neither processed_events nor dead_letters";
    }
  }

  // No double effect.
  const long long doubled =
      tx.exec("SELECT count(*) FROM (SELECT event_id FROM outreach_activities GROUP BY event_id "
              "HAVING count(*) > 1) d")[0][0]
          .as<long long>();
  EXPECT_EQ(doubled, 0) << "events with more than one activity row";
  EXPECT_EQ(static_cast<long long>(processed.size()), static_cast<long long>(acked_ids.size()))
      << "processed_events holds events nobody published";

  // Dead letters: exactly the injected poison, where it was published.
  long long dead_letters = 0;
  std::set<std::string> seen_positions;
  for (const auto& row :
       tx.exec("SELECT topic, partition, \"offset\", reason, error FROM dead_letters ORDER BY 1, 2, 3")) {
    dead_letters++;
    const std::string at = position(row[0].c_str(), row[1].as<long long>(), row[2].as<long long>());
    seen_positions.insert(at);
    auto it = acked_poison.find(at);
    if (it == acked_poison.end()) {
      ADD_FAILURE() << "dead letter at " << at << " (" << row[3].c_str() << ": " << row[4].c_str()
                    << ") is not injected poison";
      continue;
    }
    EXPECT_EQ(it->second, row[3].c_str()) << "reason of the dead letter at " << at << ": " << row[4].c_str();
    EXPECT_FALSE(std::string(row[4].c_str()).empty()) << "dead letter at " << at << " has no error text";
  }
  for (const auto& [at, reason] : acked_poison) {
    EXPECT_TRUE(seen_positions.count(at)) << "poison at " << at << " (" << reason << ") is not a dead letter";
  }
  // Each one published to the dead-letter topic (at least once: a crash
  // between the produce and the offset commit publishes it again).
  long long dead_letter_messages = 0;  // duplicates included
  for (const auto& [tp, pos] : group_positions(broker_->bootstrap(), "scenario-reader", {kDeadLetter})) {
    dead_letter_messages += std::max(0LL, pos.second);
  }
  std::set<std::string> published;
  for (const ConsumedMessage& m :
       consume_topic(broker_->bootstrap(), kDeadLetter, static_cast<size_t>(dead_letter_messages), 30s)) {
    auto header = [&](const char* name) {
      auto h = m.headers.find(name);
      return h == m.headers.end() ? std::string() : h->second;
    };
    published.insert(position(header("crm_original_topic"), std::atoll(header("crm_original_partition").c_str()),
                              std::atoll(header("crm_original_offset").c_str())));
  }
  for (const std::string& at : seen_positions) {
    EXPECT_TRUE(published.count(at)) << "dead letter at " << at << " not on " << kDeadLetter;
  }

  // Counters: processed events per type, recounted from the distinct events.
  std::map<std::string, long long> expected_types;
  for (const HistoryEvent& e : events_) expected_types[e.type]++;
  std::map<std::string, long long> types;
  for (const auto& row : tx.exec("SELECT event_type, count(*) FROM processed_events GROUP BY 1")) {
    types[row[0].c_str()] = row[1].as<long long>();
  }
  EXPECT_EQ(types, expected_types) << "processed events per type";

  // Offsets: committed to the end of every partition.
  long long behind = 0;
  for (const auto& [tp, pos] : group_positions(broker_->bootstrap(), kGroup, {topics.begin(), topics.end()})) {
    if (pos.first != pos.second) {
      behind++;
      ADD_FAILURE() << tp << ": committed " << pos.first << ", end " << pos.second;
    }
  }

  // One final state: the oracle.
  Config reference_config;
  reference_config.slack.webhook_url = Secret(kSlackWebhook);
  reference_config.lead_score.threshold = 40;
  std::string reference;
  {
    TestDatabase oracle(DatabaseOptions{.pg_dir = pg_->dir()});
    seed_web_app_rows(oracle, shape_);
    db::Database oracle_conn(oracle.conninfo());
    Status applied = apply_events(oracle_conn, in_time_order(events_), 1, db::projection_options(reference_config));
    EXPECT_TRUE(applied.is_ok()) << applied.message();
    reference = outreach_tables(oracle);
  }
  const std::set<std::string> skipped =
      options_.executors ? std::set<std::string>{"followups", "notifications", "sync_queue"} : std::set<std::string>{};
  std::vector<std::string> ours = lines_of(outreach_tables(*db_), skipped);
  std::vector<std::string> theirs = lines_of(reference, skipped);
  if (options_.executors) {
    // A prospect's next follow-up is read from the followups queue, which
    // the executors move on (fired, retried, dead): not the events' effect.
    static const std::regex next(R"("next_follow_up_at": (null|"[^"]*"))");
    for (auto* lines : {&ours, &theirs}) {
      for (std::string& l : *lines) l = std::regex_replace(l, next, R"("next_follow_up_at": "-")");
      std::sort(lines->begin(), lines->end());
    }
  }
  std::vector<std::string> only_ours, only_theirs;
  std::set_difference(ours.begin(), ours.end(), theirs.begin(), theirs.end(), std::back_inserter(only_ours));
  std::set_difference(theirs.begin(), theirs.end(), ours.begin(), ours.end(), std::back_inserter(only_theirs));
  const size_t difference = only_ours.size() + only_theirs.size();
  for (size_t i = 0; i < only_ours.size() && i < 5; ++i) ADD_FAILURE() << "only in ours:   " << only_ours[i];
  for (size_t i = 0; i < only_theirs.size() && i < 5; ++i) ADD_FAILURE() << "only in oracle: " << only_theirs[i];

  std::string after;
  for (const auto& [what, times] : faults_) {
    after += (after.empty() ? "" : ", ") + with_commas(times) + " " + what;
  }
  std::printf(
      "scenario %s (seed %u): produced %s + %s duplicates + %s poison; applied %s; doubled %lld; lost %lld; "
      "dead letters %s of %s; partitions behind %lld; oracle difference %zu; after %s\n",
      options_.name.c_str(), seed_, with_commas(static_cast<long long>(acked_ids.size())).c_str(),
      with_commas(duplicates).c_str(), with_commas(static_cast<long long>(acked_poison.size())).c_str(),
      with_commas(static_cast<long long>(processed.size())).c_str(), doubled, lost, with_commas(dead_letters).c_str(),
      with_commas(static_cast<long long>(acked_poison.size())).c_str(), behind, difference,
      after.empty() ? "no faults" : after.c_str());
  std::fflush(stdout);
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(difference, 0u);
}

std::string Scenario::every_row() const {
  auto conn = db_->connect();
  pqxx::nontransaction tx(*conn);
  std::string out;
  for (const auto& table :
       tx.exec("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")) {
    const std::string name = table[0].c_str();
    // The name comes from the catalog and is quoted; nothing here is input.
    // A dead letter seen again counts another failed delivery, which is
    // what those two columns are for; everything else must stay put.
    out += name + " " +
           tx.exec_params("SELECT coalesce(md5(string_agg((to_jsonb(x) - $1::text[])::text, E'\\n'"
                          " ORDER BY (to_jsonb(x) - $1::text[])::text)), '') FROM " +
                              tx.quote_name(name) + " x",
                          "{attempts,last_failed_at}")[0][0]
               .c_str() +
           "\n";
  }
  return out;
}

}  // namespace crm::test
