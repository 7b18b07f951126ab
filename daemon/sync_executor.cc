#include "daemon/sync_executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <set>
#include <thread>

#include "daemon/core/backoff.h"
#include "daemon/core/stoppable.h"
#include "daemon/executor_loop.h"
#include "daemon/core/crash_point.h"
#include "daemon/logging.h"
#include "db/followups.h"
#include "http/retry.h"

namespace crm {
namespace {

constexpr const char* kApi = "hubspot";
// Beyond one request's timeout, for taking budget and recording the answer
// (the lease is renewed before every request, so this bounds one step).
constexpr Millis kLeaseMargin{5000};
// Every window is widened by this much. A request counts in the window
// from the moment its answer came (no earlier than HubSpot saw it), so this
// only absorbs how HubSpot rounds its own window's edges.
constexpr Millis kBudgetMargin{100};
constexpr Millis kConfigWindow{10000};
// A 429 for the day's budget: look again after this long.
constexpr Millis kDailyHold{600000};
constexpr Millis kMaxWait{1000};
constexpr Millis kMinWait{250};
constexpr int kRecordAttempts = 5;

std::string trim_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// A token or scope refusal: HubSpot is left alone for this long (every job
// would fail the same way until an operator fixes it).
constexpr Millis kAuthHold{60000};

bool ok_status(const http::Response& r) {
  return r.outcome == http::Outcome::kAnswered && r.status >= 200 && r.status < 300;
}

// Whether HubSpot holds a property as we would push it. Exact, except
// where HubSpot writes the value back in its own form: amount as a number
// ("1500.00" -> "1500"), closedate as an ISO time for our epoch
// milliseconds ("1796083200000" -> "2026-12-01T00:00:00Z").
bool same_property(const std::string& name, const std::string& ours, const std::string& theirs) {
  if (ours == theirs) return true;
  if (ours.empty() || theirs.empty()) return false;
  if (name == "amount") {
    char* end_a = nullptr;
    char* end_b = nullptr;
    const double x = std::strtod(ours.c_str(), &end_a);
    const double y = std::strtod(theirs.c_str(), &end_b);
    return *end_a == '\0' && *end_b == '\0' && x == y;
  }
  if (name == "closedate") {
    const auto ms = std::strtoll(ours.c_str(), nullptr, 10);
    const std::string date = format_rfc3339(Timestamp{ms * 1000}).substr(0, 10);
    return theirs.size() >= 10 && theirs.compare(0, 10, date) == 0 &&
           (theirs.size() == 10 || theirs.substr(10, 9) == "T00:00:00");
  }
  return false;
}

enum class Judgement {
  kOk,
  kRetry,       // nothing certain happened: try again later
  kRowError,    // refused for something in the inputs: split to find the rows
  kBatchError,  // refused whatever the rows: the token, the scopes, the endpoint
};

Judgement judge(const http::Response& r) {
  if (ok_status(r)) return Judgement::kOk;
  if (r.outcome != http::Outcome::kAnswered) return Judgement::kRetry;
  // 423 Locked (two seconds) and 477 Migration in Progress are HubSpot's own
  // "later" (REFERENCE.md §3.4).
  if (r.status == 423 || r.status == 477 || http::classify(r) == http::Verdict::kRetry) {
    return Judgement::kRetry;
  }
  switch (r.status) {
    case 401: case 403: case 404: case 405: case 414: case 415: return Judgement::kBatchError;
    default: return Judgement::kRowError;
  }
}

std::string failure_text(const http::Response& r) {
  switch (r.outcome) {
    case http::Outcome::kAnswered: return hubspot::error_summary(r);
    case http::Outcome::kNotSent: return "HubSpot not reached: " + r.error;
    case http::Outcome::kNoAnswer: return "no answer from HubSpot: " + r.error;
    case http::Outcome::kBadAnswer: return "unreadable answer from HubSpot: " + r.error;
  }
  return r.error;
}

}  // namespace

struct SyncExecutor::Pass {
  std::vector<db::SyncJob> jobs;
  std::map<long long, db::SyncOutcome> outcomes;
  std::set<long long> lost;      // the claim was taken over
  std::set<long long> verified;  // read back in this pass: no longer in doubt
  std::set<long long> waiting;   // given back: their company goes first
  int requests = 0;
  bool stopping = false;
  bool broken = false;  // the database failed mid-pass

  bool open(const db::SyncJob* j) const {
    return !outcomes.count(j->id) && !lost.count(j->id) && !waiting.count(j->id);
  }
  bool doubtful(const db::SyncJob* j) const { return j->in_doubt && !verified.count(j->id); }
  db::SyncOutcome& set(const db::SyncJob* j, db::SyncOutcome::Kind kind, std::string error = {}) {
    db::SyncOutcome& o = outcomes[j->id];
    o.job = j;
    o.kind = kind;
    o.error = std::move(error);
    o.in_doubt = false;
    return o;
  }
  db::SyncOutcome& completed(const db::SyncJob* j, std::optional<std::string> hubspot_id,
                             const char* row_status) {
    db::SyncOutcome& o = set(j, db::SyncOutcome::Kind::kCompleted);
    o.hubspot_id = std::move(hubspot_id);
    o.row_status = row_status;
    return o;
  }
};

SyncExecutor::SyncExecutor(const Config& config, std::string conninfo,
                           monitoring::Metrics& metrics, std::string instance)
    : config_(config),
      db_(std::move(conninfo)),
      metrics_(metrics),
      instance_(std::move(instance)),
      deals_{config.hubspot.deal_pipeline, config.hubspot.deal_stages},
      projection_(db::projection_options(config)),
      http_(http::ClientOptions{.connect_timeout = std::min(config.hubspot.timeout, Millis{5000})}) {
  db_.listen("crm_sync");
}

SyncExecutor::Sent SyncExecutor::call(Pass& pass, const std::string& path, Jobs& jobs,
                                      const std::function<std::string(const Jobs&)>& body) {
  const std::vector<db::RateWindow> windows{{config_.hubspot.requests_per_10s, kConfigWindow}};
  const Millis lease = config_.hubspot.timeout + kLeaseMargin;
  long long counted = 0;
  for (int failures = 0;;) {
    std::erase_if(jobs, [&](const db::SyncJob* j) { return pass.lost.count(j->id) != 0; });
    if (jobs.empty()) return {};
    if (stop_ != nullptr && stop_->load()) {
      pass.stopping = true;
      return {};
    }
    std::vector<db::SyncJob> live;
    for (const auto& j : pass.jobs) {
      if (!pass.lost.count(j.id)) live.push_back(j);
    }
    db::ApiTake take;
    std::vector<long long> held;
    Status s = db_.transact([&](pqxx::work& tx) {
      take = db::take_api_request(tx, kApi, windows, kBudgetMargin);
      held = db::renew_sync_leases(tx, instance_, live, lease);
      return Status::ok();
    });
    if (!s) {
      if (++failures >= 3) {
        pass.broken = true;
        log::warn("HubSpot sync: database error, batch left to its lease", {{"error", s.message()}});
        return {};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200 * failures));
      continue;
    }
    bool lost_some = false;
    for (const auto& j : live) {
      if (std::find(held.begin(), held.end(), j.id) != held.end()) continue;
      pass.lost.insert(j.id);
      lost_some = lost_some || std::any_of(jobs.begin(), jobs.end(),
                                           [&](const db::SyncJob* r) { return r->id == j.id; });
    }
    if (lost_some) continue;  // the request is built again without them
    if (!take.wait) {
      counted = take.request;
      break;
    }
    if (stop_ != nullptr) {
      sleep_unless_stopped(*stop_, std::min(*take.wait, kMaxWait));
    } else {
      std::this_thread::sleep_for(std::min(*take.wait, kMaxWait));
    }
  }

  http::Request request;
  request.url = trim_slash(config_.hubspot.base_url) + path;
  request.headers = {{"Authorization", "Bearer " + config_.hubspot.token.reveal()},
                     {"Content-Type", "application/json"}};
  request.body = body(jobs);
  request.timeout = config_.hubspot.timeout;
  Sent sent;
  sent.response = http_.post(request);
  sent.sent = true;
  ++pass.requests;
  metrics_.external_request(kApi, http::response_code_label(sent.response), sent.response.seconds);
  // From now on the budget counts the request from its answer: no earlier
  // than HubSpot saw it, however late it got there.
  Status s = db_.transact([&](pqxx::work& tx) {
    db::api_request_answered(tx, counted);
    return Status::ok();
  });
  (void)s;
  if (sent.response.outcome == http::Outcome::kAnswered) learn_budget(sent.response);
  return sent;
}

void SyncExecutor::learn_budget(const http::Response& response) {
  const hubspot::RateHeaders h = hubspot::rate_headers(response);
  if (!h.max || !h.interval) return;
  int budget = *h.max;
  // Little left: other clients of the app may be spending it. What is ours
  // to spend is what we sent in the window plus what HubSpot says remains.
  std::optional<db::RateWindow> shared;
  Status s = db_.transact([&](pqxx::work& tx) {
    if (h.remaining && *h.remaining < *h.max / 4) {
      budget = std::clamp(db::api_requests_in(tx, kApi, *h.interval) + *h.remaining, 1, *h.max);
    }
    const db::RateWindow window{budget, *h.interval};
    shared = db::api_window(tx, kApi);
    if (!shared || shared->max != window.max || shared->interval != window.interval) {
      db::set_api_window(tx, kApi, window);
    }
    return Status::ok();
  });
  if (!s) return;
  if (budget < *h.max && (!learned_ || learned_->max != budget)) {
    log::info("HubSpot budget low: slowing down",
              {{"remaining", h.remaining.value_or(0)}, {"budget", budget}, {"max", *h.max}});
  }
  learned_ = db::RateWindow{budget, *h.interval};
}

void SyncExecutor::refused(Pass& pass, const Jobs& jobs, const http::Response& response) {
  const bool limited = response.outcome == http::Outcome::kAnswered && response.status == 429;
  // Did HubSpot possibly act? Not when nothing was sent or it said 429.
  const bool maybe_acted = !(response.outcome == http::Outcome::kNotSent || limited);
  std::optional<Millis> after = http::retry_after(response, now_timestamp());
  if (limited) {
    Millis hold = after.value_or(learned_ ? learned_->interval : kConfigWindow);
    if (!after && hubspot::daily_limit_hit(response)) {
      hold = kDailyHold;
      log::error("HubSpot's daily API limit is spent: syncing paused",
                 {{"retry_in_ms", static_cast<long long>(hold.count())}});
    }
    after = hold;
    // Every instance waits: the budget is the app's.
    Status s = db_.transact([&](pqxx::work& tx) {
      db::hold_api_slot(tx, kApi, hold);
      return Status::ok();
    });
    (void)s;
  }
  const std::string error = failure_text(response);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (const db::SyncJob* j : jobs) {
    if (!pass.open(j)) continue;
    db::SyncOutcome& o = pass.set(j, db::SyncOutcome::Kind::kRetry, error);
    o.in_doubt = pass.doubtful(j) || maybe_acted;
    // HubSpot would not look at it: the attempt does not count.
    o.refund_attempt = limited;
    o.delay = backoff_delay(j->attempts - 1, config_.retry.initial_backoff,
                            config_.retry.max_backoff, unit(rng_));
    if (after) o.delay = std::max(o.delay, *after);
  }
  metrics_.retry(kApi);
}

void SyncExecutor::refused_for_good(Pass& pass, const Jobs& jobs, const http::Response& response) {
  const std::string error = hubspot::error_summary(response);
  for (const db::SyncJob* j : jobs) {
    if (pass.open(j)) pass.set(j, db::SyncOutcome::Kind::kFailed, error);
  }
  if (response.status == 401 || response.status == 403) {
    log::error("HubSpot refused the token or its scopes: syncing paused; fix it, then "
               "`crm-worker sync redrive --all`",
               {{"error", error}, {"pause_ms", static_cast<long long>(kAuthHold.count())}});
    Status s = db_.transact([&](pqxx::work& tx) {
      db::hold_api_slot(tx, kApi, kAuthHold);
      return Status::ok();
    });
    (void)s;
  }
}

SyncExecutor::ReadBack SyncExecutor::read(Pass& pass, const std::string& type, Jobs jobs,
                                          const std::vector<std::string>& properties) {
  ReadBack out;
  const Sent s = call(pass, "/crm/v3/objects/" + hubspot::object_type(type) + "/batch/read", jobs,
                      [&](const Jobs& js) {
                        std::vector<std::string> ids;
                        for (const auto* j : js) ids.push_back(j->entity_id);
                        return hubspot::read_body(ids, config_.hubspot.id_property, properties);
                      });
  if (!s.sent) return out;
  out.response = s.response;
  const http::Response& r = s.response;
  switch (judge(r)) {
    case Judgement::kOk:
      if (auto results = hubspot::parse_results(r.body)) {
        for (auto& obj : *results) {
          auto it = obj.properties.find(config_.hubspot.id_property);
          if (it != obj.properties.end()) out.found[it->second] = std::move(obj);
        }
        for (const auto* j : jobs) pass.verified.insert(j->id);
        out.kind = ReadBack::Kind::kRead;
        return out;
      }
      break;  // an unreadable 2xx: as if no answer came
    case Judgement::kRowError:
    case Judgement::kBatchError:
      out.kind = ReadBack::Kind::kRefused;
      return out;
    case Judgement::kRetry: break;
  }
  refused(pass, jobs, r);
  out.kind = ReadBack::Kind::kRetried;
  return out;
}

void SyncExecutor::push(Pass& pass, const std::string& type, Jobs jobs,
                        const std::map<std::string, db::SyncRow>& rows) {
  std::erase_if(jobs, [&](const db::SyncJob* j) { return !pass.open(j); });
  if (jobs.empty() || pass.stopping || pass.broken) return;
  const Sent s = call(pass, "/crm/v3/objects/" + hubspot::object_type(type) + "/batch/upsert", jobs,
                      [&](const Jobs& js) {
                        std::vector<hubspot::Input> inputs;
                        for (const auto* j : js) {
                          hubspot::Input in{j->entity_id, {}};
                          for (const auto& [k, v] : rows.at(j->entity_id).properties) {
                            in.properties[k] = v.value_or("");
                          }
                          in.properties[config_.hubspot.id_property] = j->entity_id;
                          inputs.push_back(std::move(in));
                        }
                        return hubspot::upsert_body(inputs, config_.hubspot.id_property);
                      });
  if (!s.sent) return;
  crash_point("after_hubspot_upsert");
  const http::Response& r = s.response;
  switch (judge(r)) {
    case Judgement::kOk: {
      auto results = hubspot::parse_results(r.body);
      std::map<std::string, std::string> ids;
      if (results) {
        for (const auto& obj : *results) {
          if (auto it = obj.properties.find(config_.hubspot.id_property); it != obj.properties.end()) {
            ids[it->second] = obj.id;
          }
        }
      }
      Jobs unanswered;
      for (const auto* j : jobs) {
        if (auto it = ids.find(j->entity_id); it != ids.end()) {
          pass.completed(j, it->second, "synced");
        } else {
          unanswered.push_back(j);
        }
      }
      // Accepted, but the answer does not say what became of these: as if
      // no answer came (read back before the next push).
      if (!unanswered.empty()) {
        http::Response silent = r;
        silent.outcome = http::Outcome::kBadAnswer;
        silent.error = results ? "the batch answer did not include the object"
                               : "the batch answer could not be read";
        refused(pass, unanswered, silent);
      }
      return;
    }
    case Judgement::kRetry: refused(pass, jobs, r); return;
    case Judgement::kBatchError: refused_for_good(pass, jobs, r); return;
    case Judgement::kRowError: break;
  }
  // Refused for something in the inputs. Alone: this row is bad. Several:
  // split until the bad ones are alone, so the good ones are synced.
  if (jobs.size() == 1) {
    pass.set(jobs.front(), db::SyncOutcome::Kind::kFailed, hubspot::error_summary(r)).row_status =
        "failed";
    return;
  }
  const auto mid = jobs.begin() + static_cast<std::ptrdiff_t>(jobs.size() / 2);
  push(pass, type, {jobs.begin(), mid}, rows);
  push(pass, type, {mid, jobs.end()}, rows);
}

void SyncExecutor::associate(Pass& pass, const std::string& type, Jobs jobs,
                             const std::map<std::string, db::SyncRow>& rows) {
  if (jobs.empty() || pass.stopping || pass.broken) return;
  auto pair_of = [&](const db::SyncJob* j) {
    return std::make_pair(*pass.outcomes.at(j->id).hubspot_id, *rows.at(j->entity_id).company_hubspot_id);
  };
  const Sent s = call(pass,
                      "/crm/v4/associations/" + hubspot::object_type(type) +
                          "/companies/batch/associate/default",
                      jobs, [&](const Jobs& js) {
                        std::vector<std::pair<std::string, std::string>> pairs;
                        for (const auto* j : js) pairs.push_back(pair_of(j));
                        return hubspot::associate_body(pairs);
                      });
  if (!s.sent) {
    // The objects are pushed; the association waits for the next attempt,
    // which reads them back rather than pushing them again.
    for (const auto* j : jobs) {
      db::SyncOutcome& o = pass.outcomes.at(j->id);
      o.kind = db::SyncOutcome::Kind::kRetry;
      o.error = "pushed; the association with its company is still to be made";
      o.in_doubt = true;
    }
    return;
  }
  const http::Response& r = s.response;
  switch (judge(r)) {
    case Judgement::kOk:
      for (const auto* j : jobs) pass.outcomes.at(j->id).linked_company = pair_of(j).second;
      return;
    case Judgement::kRetry:
      // Pushed but not associated: retried, and read back before any push.
      for (const auto* j : jobs) pass.outcomes.erase(j->id);
      refused(pass, jobs, r);
      for (const auto* j : jobs) pass.outcomes.at(j->id).in_doubt = true;
      return;
    case Judgement::kBatchError:
    case Judgement::kRowError:
      if (jobs.size() == 1 || judge(r) == Judgement::kBatchError) {
        for (const auto* j : jobs) {
          db::SyncOutcome& o = pass.outcomes.at(j->id);
          o.kind = db::SyncOutcome::Kind::kFailed;
          o.error = "pushed, but the association with its company was refused: " +
                    hubspot::error_summary(r);
        }
        return;
      }
      break;
  }
  const auto mid = jobs.begin() + static_cast<std::ptrdiff_t>(jobs.size() / 2);
  associate(pass, type, {jobs.begin(), mid}, rows);
  associate(pass, type, {mid, jobs.end()}, rows);
}

void SyncExecutor::upsert(Pass& pass, const Jobs& jobs) {
  const std::string type = jobs.front()->entity_type;
  std::vector<std::string> ids;
  for (const auto* j : jobs) ids.push_back(j->entity_id);
  std::map<std::string, db::SyncRow> rows;
  std::set<std::string> coming;  // companies of these rows on their way to HubSpot
  Status s = db_.transact([&](pqxx::work& tx) {
    rows = db::load_sync_rows(tx, type, ids, deals_);
    std::vector<std::string> companies;
    for (const auto& [id, row] : rows) {
      if (row.company_id && !row.company_hubspot_id) companies.push_back(*row.company_id);
    }
    coming = db::companies_on_their_way(tx, companies);
    return Status::ok();
  });
  if (!s) {
    pass.broken = true;
    return;
  }
  Jobs todo, doubtful;
  for (const auto* j : jobs) {
    auto row = rows.find(j->entity_id);
    if (row == rows.end()) {
      pass.set(j, db::SyncOutcome::Kind::kFailed,
               "no " + type + " row '" + j->entity_id + "' to push (not written by the web app, "
               "or deleted without a delete request)");
      continue;
    }
    // Its company goes first: this job is given back, and waits for it.
    if (row->second.company_id && !row->second.company_hubspot_id &&
        coming.count(*row->second.company_id)) {
      pass.waiting.insert(j->id);
      continue;
    }
    todo.push_back(j);
    if (pass.doubtful(j)) doubtful.push_back(j);
  }

  // In doubt: what HubSpot already holds as we would push it is not pushed again.
  if (!doubtful.empty()) {
    std::vector<std::string> properties{config_.hubspot.id_property};
    for (const auto& [k, v] : rows.at(doubtful.front()->entity_id).properties) properties.push_back(k);
    const ReadBack back = read(pass, type, doubtful, properties);
    if (back.kind == ReadBack::Kind::kNotSent) return;
    for (const auto* j : doubtful) {
      auto it = back.found.find(j->entity_id);
      if (it == back.found.end() || !pass.open(j)) continue;
      bool same = true;
      for (const auto& [k, v] : rows.at(j->entity_id).properties) {
        auto p = it->second.properties.find(k);
        if (!same_property(k, v.value_or(""), p == it->second.properties.end() ? "" : p->second)) {
          same = false;
          break;
        }
      }
      if (same) pass.completed(j, it->second.id, "synced");
    }
    // A refused read: the push's own answer decides.
  }
  push(pass, type, todo, rows);

  if (type == "company") return;
  Jobs links;
  for (const auto* j : todo) {
    auto it = pass.outcomes.find(j->id);
    if (it == pass.outcomes.end() || it->second.kind != db::SyncOutcome::Kind::kCompleted ||
        pass.lost.count(j->id)) {
      continue;
    }
    const db::SyncRow& row = rows.at(j->entity_id);
    if (!row.company_id) continue;
    if (!row.company_hubspot_id) {
      it->second.kind = db::SyncOutcome::Kind::kFailed;
      it->second.error = "pushed without its association: the sync of company '" + *row.company_id +
                         "' failed (see `crm-worker sync list`)";
      continue;
    }
    if (row.linked_company_hubspot_id == row.company_hubspot_id) continue;
    links.push_back(j);
  }
  associate(pass, type, links, rows);
}

void SyncExecutor::archive(Pass& pass, const Jobs& jobs) {
  const std::string type = jobs.front()->entity_type;
  std::vector<std::string> ids;
  for (const auto* j : jobs) ids.push_back(j->entity_id);
  std::map<std::string, std::string> known;
  Status s = db_.transact([&](pqxx::work& tx) {
    known = db::known_hubspot_ids(tx, type, ids);
    return Status::ok();
  });
  if (!s) {
    pass.broken = true;
    return;
  }
  // Rows the web app already deleted (or never synced here): found in
  // HubSpot by our id, if they are there at all.
  Jobs unknown;
  for (const auto* j : jobs) {
    if (!known.count(j->entity_id)) unknown.push_back(j);
  }
  if (!unknown.empty()) {
    const ReadBack back = read(pass, type, unknown, {config_.hubspot.id_property});
    switch (back.kind) {
      case ReadBack::Kind::kNotSent:
      case ReadBack::Kind::kRetried: return;
      case ReadBack::Kind::kRefused:
        // Not knowing is not "not there": the object may still be in HubSpot.
        if (judge(back.response) == Judgement::kBatchError) {
          refused_for_good(pass, unknown, back.response);
        } else {
          for (const auto* j : unknown) {
            if (pass.open(j)) {
              pass.set(j, db::SyncOutcome::Kind::kFailed,
                       "could not look the object up to archive it: " + hubspot::error_summary(back.response));
            }
          }
        }
        break;
      case ReadBack::Kind::kRead:
        for (const auto* j : unknown) {
          if (auto it = back.found.find(j->entity_id); it != back.found.end()) {
            known[j->entity_id] = it->second.id;
          } else if (pass.open(j)) {
            pass.completed(j, std::nullopt, "archived");  // nothing in HubSpot to archive
          }
        }
        break;
    }
  }
  std::function<void(Jobs)> send = [&](Jobs batch) {
    std::erase_if(batch, [&](const db::SyncJob* j) { return !pass.open(j); });
    if (batch.empty() || pass.stopping || pass.broken) return;
    const Sent sent = call(pass, "/crm/v3/objects/" + hubspot::object_type(type) + "/batch/archive", batch,
                           [&](const Jobs& js) {
                             std::vector<std::string> hubspot_ids;
                             for (const auto* j : js) hubspot_ids.push_back(known.at(j->entity_id));
                             return hubspot::archive_body(hubspot_ids);
                           });
    if (!sent.sent) return;
    const http::Response& r = sent.response;
    switch (judge(r)) {
      case Judgement::kOk:
        for (const auto* j : batch) pass.completed(j, std::nullopt, "archived");
        return;
      case Judgement::kRetry:
        refused(pass, batch, r);
        // Archiving twice is harmless: nothing to read back first.
        for (const auto* j : batch) pass.outcomes.at(j->id).in_doubt = false;
        return;
      case Judgement::kBatchError: refused_for_good(pass, batch, r); return;
      case Judgement::kRowError: break;
    }
    if (batch.size() == 1) {
      pass.set(batch.front(), db::SyncOutcome::Kind::kFailed, hubspot::error_summary(r));
      return;
    }
    const auto mid = batch.begin() + static_cast<std::ptrdiff_t>(batch.size() / 2);
    send({batch.begin(), mid});
    send({mid, batch.end()});
  };
  send(jobs);
}

Status SyncExecutor::record(Pass& pass) {
  std::vector<db::SyncOutcome> outcomes;
  std::vector<db::SyncJob> released;
  for (const auto& j : pass.jobs) {
    if (pass.lost.count(j.id)) continue;
    if (auto it = pass.outcomes.find(j.id); it != pass.outcomes.end()) {
      outcomes.push_back(it->second);
    } else {
      released.push_back(j);  // not attempted (stopping): given back
    }
  }
  std::map<std::string, std::vector<std::string>> new_ids;
  for (const auto& o : outcomes) {
    if (o.hubspot_id) new_ids[o.job->entity_type].push_back(o.job->entity_id);
  }
  Status s;
  for (int attempt = 0; attempt < kRecordAttempts; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
    s = db_.transact([&](pqxx::work& tx) {
      const std::vector<long long> written =
          db::record_sync_outcomes(tx, instance_, outcomes, config_.retry.max_attempts);
      db::release_sync_jobs(tx, instance_, released);
      // Changes made in HubSpot before we knew the object's id wait on the
      // timeline: with the id written back they apply now (SPEC §6).
      for (const auto& [type, ids] : new_ids) {
        std::vector<std::string> mine;
        for (const auto& o : outcomes) {
          if (o.hubspot_id && o.job->entity_type == type &&
              std::find(written.begin(), written.end(), o.job->id) != written.end()) {
            mine.push_back(o.job->entity_id);
          }
        }
        db::reproject_hubspot_changes(tx, type, mine, projection_);
      }
      return Status::ok();
    });
    if (s || !s.is_transient()) break;
  }
  return s;
}

Result<SyncPass> SyncExecutor::run_once() {
  SyncPass out;
  Millis held{0};
  Status s = db_.transact([&](pqxx::work& tx) {
    held = db::api_slot_wait(tx, kApi);
    return Status::ok();
  });
  if (!s) return s;
  if (held > Millis{0}) return out;

  Pass pass;
  s = db_.transact([&](pqxx::work& tx) {
    pass.jobs = db::claim_sync_jobs(tx, instance_, config_.hubspot.timeout + kLeaseMargin,
                                    config_.hubspot.batch_size, config_.retry.max_attempts,
                                    next_type_++);
    return Status::ok();
  });
  if (!s) return s;
  if (pass.jobs.empty()) return out;
  crash_point("after_sync_claim");
  out.claimed = static_cast<int>(pass.jobs.size());
  out.more = true;

  Jobs upserts, deletes;
  for (const auto& j : pass.jobs) (j.operation == "delete" ? deletes : upserts).push_back(&j);
  if (!deletes.empty()) archive(pass, deletes);
  if (!upserts.empty() && !pass.broken) upsert(pass, upserts);
  out.requests = pass.requests;
  if (pass.broken) return Status::transient("database", "database unavailable during a HubSpot batch");

  if (Status r = record(pass); !r) {
    // Unrecorded: the jobs stay in_progress until their lease ends and
    // come back in doubt (read back before any push).
    log::error("HubSpot sync: could not record a batch's outcomes", {{"error", r.message()}});
    return r;
  }
  const std::string type = pass.jobs.front().entity_type;
  for (const auto& [id, o] : pass.outcomes) {
    if (pass.lost.count(id)) continue;
    switch (o.kind) {
      case db::SyncOutcome::Kind::kCompleted: ++out.completed; break;
      case db::SyncOutcome::Kind::kRetry:
        if (o.job->attempts >= config_.retry.max_attempts) {
          ++out.failed;
          log::error("HubSpot sync job dead: out of attempts",
                     {{"job", o.job->id}, {"entity_type", type}, {"entity_id", o.job->entity_id},
                      {"attempts", o.job->attempts}, {"error", o.error}});
        } else {
          ++out.retried;
        }
        break;
      case db::SyncOutcome::Kind::kFailed:
        ++out.failed;
        log::error("HubSpot sync job failed", {{"job", o.job->id}, {"entity_type", type},
                                               {"entity_id", o.job->entity_id}, {"error", o.error}});
        break;
    }
  }
  if (!pass.lost.empty()) {
    log::warn("HubSpot sync: jobs taken over by another worker after their lease ran out",
              {{"jobs", static_cast<long long>(pass.lost.size())}});
  }
  log::info("HubSpot sync batch", {{"entity_type", type}, {"claimed", out.claimed},
                                   {"completed", out.completed}, {"retried", out.retried},
                                   {"failed", out.failed}, {"requests", out.requests}});
  return out;
}

Status SyncExecutor::report() {
  db::SyncStats stats;
  Status s = db_.transact([&](pqxx::work& tx) {
    stats = db::sync_stats(tx);
    return Status::ok();
  });
  if (!s) return s;
  metrics_.set_sync_queue(stats.by_status, stats.oldest_pending_seconds);
  return Status::ok();
}

void SyncExecutor::run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  if (!config_.hubspot.token.is_set()) {
    log::warn("HubSpot sync jobs wait: the HubSpot token (CRM_WORKER_HUBSPOT_TOKEN) is not set");
  }
  ExecutorLoop loop;
  loop.name = "HubSpot sync executor";
  loop.report = [this] { return report(); };
  loop.step = [this]() -> Result<bool> {
    if (!config_.hubspot.token.is_set()) return false;
    Result<SyncPass> pass = run_once();
    if (!pass) return pass.status();
    return pass->more;
  };
  loop.idle_wait = [this] {
    if (!config_.hubspot.token.is_set()) return kMaxWait;
    std::optional<Millis> next;
    Millis held{0};
    Status s = db_.transact([&](pqxx::work& tx) {
      next = db::next_sync_due_in(tx);
      held = db::api_slot_wait(tx, kApi);
      return Status::ok();
    });
    return s && next ? std::clamp(std::max(*next, held), kMinWait, kMaxWait) : kMaxWait;
  };
  loop.await = [this](Millis wait) { db_.await_notification(wait); };
  run_executor_loop(stop, loop, rng_);
  stop_ = nullptr;
}

}  // namespace crm
