#include "daemon/followup_executor.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>

#include <boost/json.hpp>

#include "daemon/core/backoff.h"
#include "daemon/executor_loop.h"
#include "daemon/core/crash_point.h"
#include "daemon/core/time.h"
#include "daemon/logging.h"
#include "handlers/routing.h"
#include "http/retry.h"

namespace crm {
namespace {

namespace json = boost::json;

constexpr int kClaimLimit = 20;
// The longest sleep between looks at the table: a NOTIFY cuts it short, so
// this only bounds how late a stop request or a lost notification is seen.
constexpr Millis kMaxWait{1000};
constexpr Millis kMinWait{20};
// Beyond SendGrid's own timeout, for recording its answer.
constexpr Millis kLeaseMargin{10000};
constexpr int kFinishAttempts = 5;

db::SendWindow send_window(const FollowupsConfig& c) {
  db::SendWindow w;
  if (auto parsed = parse_send_window(c.send_window)) {
    w.start_min = parsed->first;
    w.end_min = parsed->second;
  }
  w.weekends = c.send_on_weekends;
  w.default_zone = c.default_time_zone;
  return w;
}

std::vector<std::string> fireable_kinds(const Config& c) {
  std::vector<std::string> kinds;
  if (!c.sendgrid.api_key.empty() && !c.sendgrid.from_email.empty()) kinds.emplace_back("email");
  if (!c.slack.webhook_url.empty()) {
    kinds.emplace_back("call_reminder");
    kinds.emplace_back("stale_deal");
  }
  return kinds;
}

std::string trim_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

Event followup_sent_event(const db::ClaimedFollowup& f,
                          const std::optional<std::string>& provider_message_id) {
  Event e;
  e.id = "followup:" + f.id + ":sent";
  e.source = "crm-worker/followups";
  e.type = "crm.email.sent";
  e.time = f.claimed_at;
  e.data["email_id"] = f.id;
  e.data["prospect_id"] = f.prospect_id;
  if (provider_message_id && !provider_message_id->empty()) {
    e.data["provider_message_id"] = *provider_message_id;
  }
  if (f.template_id) e.data["template"] = *f.template_id;
  if (f.sequence_step) e.data["sequence_step"] = *f.sequence_step;
  e.key = f.prospect_id;
  e.origin.topic = "crm-worker.followups";
  return e;
}

void record_followup_email(pqxx::transaction_base& tx, const Event& sent,
                           const db::ProjectionOptions& options) {
  const handlers::Handler* handler = handlers::find_handler(sent.type);
  Result<handlers::Fact> fact = handler->extract(sent);
  // Built by followup_sent_event from a claimed row: a contract violation
  // here is a bug, and the row stays `sending` → reported in doubt.
  if (!fact) throw std::logic_error("follow-up email fact: " + fact.status().message());
  const db::FactRow row{&sent, &*fact};
  if (db::record_facts(tx, {row}).front()) db::project(tx, {row}, options);
}

std::string sendgrid_body(const db::ClaimedFollowup& f, const Config& config,
                          const std::string& template_id) {
  json::object to{{"email", f.email.value_or("")}};
  if (f.name) to["name"] = *f.name;
  json::object custom{{"prospect_id", f.prospect_id}, {"email_id", f.id}, {"followup_id", f.id}};
  json::object data{{"prospect_id", f.prospect_id}};
  if (f.name) data["name"] = *f.name;
  if (f.company) data["company"] = *f.company;
  if (f.sequence_step) data["sequence_step"] = *f.sequence_step;
  json::object personalization{{"to", json::array{to}},
                               {"custom_args", custom},
                               {"dynamic_template_data", data}};
  json::object from{{"email", config.sendgrid.from_email}};
  if (!config.sendgrid.from_name.empty()) from["name"] = config.sendgrid.from_name;
  json::object body{{"personalizations", json::array{personalization}},
                    {"from", from},
                    {"template_id", template_id}};
  return json::serialize(body);
}

FollowupExecutor::FollowupExecutor(const Config& config, std::string conninfo,
                                   monitoring::Metrics& metrics, std::string instance)
    : config_(config),
      db_(std::move(conninfo)),
      metrics_(metrics),
      instance_(std::move(instance)),
      kinds_(fireable_kinds(config)),
      projection_(db::projection_options(config)),
      window_(send_window(config.followups)),
      http_(http::ClientOptions{.connect_timeout = std::min(config.sendgrid.timeout, Millis{5000})}) {
  db_.listen("crm_followups");
}

Result<FirePass> FollowupExecutor::fire_due(std::optional<Timestamp> now) {
  FirePass pass;
  db::ClaimOptions options;
  options.owner = instance_;
  options.lease = config_.sendgrid.timeout + kLeaseMargin;
  options.window = window_;
  options.now = now;
  options.prospect_wait = config_.followups.prospect_wait;
  options.prospect_look_min = config_.retry.initial_backoff;
  options.prospect_look_max = config_.retry.max_backoff;

  // Reminders and alerts, many at once: fired into the Slack outbox inside
  // the claim's own transaction.
  for (const std::string& k : kinds_) {
    if (k != "email") options.kinds.push_back(k);
  }
  if (!options.kinds.empty()) {
    options.limit = kClaimLimit;
    db::ClaimResult claim;
    Status s = db_.transact([&](pqxx::work& tx) {
      claim = db::claim_due(tx, options);
      std::vector<const db::ClaimedFollowup*> rows;
      std::set<std::string> prospects;
      for (const auto& f : claim.fired) {
        rows.push_back(&f);
        // Call reminders never count as the prospect's next follow-up.
        if (f.kind != "call_reminder") prospects.insert(f.prospect_id);
      }
      db::queue_notifications(tx, rows);
      db::refresh_next_follow_up(tx, {prospects.begin(), prospects.end()});
      return Status::ok();
    });
    if (!s) return s;
    pass.queued = static_cast<int>(claim.fired.size());
    pass.cancelled = claim.cancelled;
    pass.more = static_cast<int>(claim.fired.size()) + claim.cancelled >= kClaimLimit;
    for (const auto& f : claim.fired) {
      log::debug("follow-up fired to the Slack outbox",
                 {{"followup_id", f.id}, {"kind", f.kind}, {"prospect_id", f.prospect_id}});
    }
  }

  // Emails, one per claim: the claim commits `sending`, then SendGrid is
  // called at once, so the lease covers exactly one request and a slow
  // SendGrid holds no other timer back.
  if (std::find(kinds_.begin(), kinds_.end(), "email") != kinds_.end() &&
      !(stop_ != nullptr && stop_->load())) {
    options.kinds = {"email"};
    options.limit = 1;
    db::ClaimResult claim;
    Status s = db_.transact([&](pqxx::work& tx) {
      claim = db::claim_due(tx, options);
      std::vector<std::string> prospects;
      for (const auto& f : claim.fired) prospects.push_back(f.prospect_id);
      for (const auto& f : claim.given_up) prospects.push_back(f.prospect_id);
      db::refresh_next_follow_up(tx, prospects);
      return Status::ok();
    });
    if (!s) return s;
    pass.cancelled += claim.cancelled;
    pass.deferred += claim.deferred;
    pass.waiting += static_cast<int>(claim.waiting.size());
    pass.dead += static_cast<int>(claim.given_up.size());
    pass.more = pass.more || claim.cancelled + claim.deferred + claim.fired.size() + claim.waiting.size() +
                                     claim.given_up.size() > 0;
    for (const auto& f : claim.waiting) {
      log::info("follow-up email waits for its prospect's discovery",
                {{"followup_id", f.id}, {"prospect_id", f.prospect_id}});
    }
    for (const auto& f : claim.given_up) {
      log::error("follow-up email not sent, giving up: its prospect was never discovered",
                 {{"followup_id", f.id}, {"prospect_id", f.prospect_id},
                  {"waited", format_duration(config_.followups.prospect_wait)}});
    }
    for (const auto& f : claim.fired) {
      crash_point("after_followup_sending");
      switch (send_email(f)) {
        case SendResult::kSent: ++pass.sent; break;
        case SendResult::kRetry: ++pass.retried; break;
        case SendResult::kDead: ++pass.dead; break;
        case SendResult::kInDoubt: ++pass.in_doubt; break;
      }
    }
  }
  if (pass.cancelled > 0 || pass.deferred > 0) {
    log::info("follow-ups re-checked at their due time",
              {{"cancelled", pass.cancelled}, {"deferred_to_send_window", pass.deferred}});
  }
  return pass;
}

FollowupExecutor::SendResult FollowupExecutor::send_email(const db::ClaimedFollowup& f) {
  std::string template_id;
  if (f.template_id && f.template_id->rfind("d-", 0) == 0) {
    template_id = *f.template_id;
  } else {
    template_id = config_.sendgrid.followup_template;
  }
  std::string refusal;
  if (!f.email || f.email->empty()) {
    refusal = "the prospect has no email address";
  } else if (template_id.empty()) {
    refusal = "no dynamic template: the follow-up names none and sendgrid.followup_template is unset";
  }
  if (!refusal.empty()) {
    if (Status s = finish(f, SendResult::kDead, http::Response{}, refusal); !s) {
      log::error("could not record a follow-up's end", {{"followup_id", f.id}, {"error", s.message()}});
    }
    return SendResult::kDead;
  }

  http::Request request;
  request.url = trim_slash(config_.sendgrid.base_url) + "/v3/mail/send";
  request.headers = {{"Authorization", "Bearer " + config_.sendgrid.api_key.reveal()},
                     {"Content-Type", "application/json"}};
  request.body = sendgrid_body(f, config_, template_id);
  request.timeout = config_.sendgrid.timeout;
  const http::Response response = http_.post(request);
  crash_point("after_sendgrid_call");
  metrics_.external_request("sendgrid", http::response_code_label(response), response.seconds);

  SendResult result;
  std::string error;
  const bool accepted = response.status >= 200 && response.status < 300;
  if (accepted && (response.outcome == http::Outcome::kAnswered ||
                   response.outcome == http::Outcome::kNoAnswer)) {
    // A 2xx whose body was cut off was still accepted.
    result = SendResult::kSent;
  } else if (response.outcome == http::Outcome::kNotSent ||
             (response.outcome == http::Outcome::kAnswered &&
              http::classify(response) == http::Verdict::kRetry)) {
    // Refused with an answer, or never reached SendGrid: nothing went out.
    result = SendResult::kRetry;
    error = response.outcome == http::Outcome::kAnswered
                ? "SendGrid answered " + std::to_string(response.status)
                : "SendGrid not reached: " + response.error;
    if (f.attempts >= config_.retry.max_attempts) {
      result = SendResult::kDead;
      error += " (attempt " + std::to_string(f.attempts) + " of " +
               std::to_string(config_.retry.max_attempts) + ", giving up)";
    }
  } else if (response.outcome == http::Outcome::kAnswered) {
    result = SendResult::kDead;
    error = "SendGrid refused the email: " + std::to_string(response.status);
  } else {
    result = SendResult::kInDoubt;
    error = std::string("in doubt: SendGrid gave no usable answer (") + response.error +
            "); the email may have been sent and is not sent again";
  }
  if (Status s = finish(f, result, response, error); !s) {
    // The outcome is not recorded: the row stays `sending` and is reported
    // in doubt once its lease passes. Never a second email.
    log::error("could not record a follow-up email's outcome",
               {{"followup_id", f.id}, {"error", s.message()}});
  }
  return result;
}

Status FollowupExecutor::finish(const db::ClaimedFollowup& f, SendResult result,
                                const http::Response& response, const std::string& error) {
  std::optional<std::string> message_id;
  if (auto it = response.headers.find("x-message-id"); it != response.headers.end()) {
    message_id = it->second;
  }
  Millis delay{0};
  std::optional<Millis> after;
  if (result == SendResult::kRetry) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    delay = backoff_delay(f.attempts - 1, config_.retry.initial_backoff, config_.retry.max_backoff,
                          unit(rng_));
    after = http::retry_after(response, now_timestamp());
    if (after) delay = std::max(delay, *after);
  }
  // Recording an outcome is idempotent, so a transient failure (a deadlock
  // victim, a connection blip) is simply tried again: an accepted email must
  // not end in doubt for want of a retry.
  Status s;
  for (int attempt = 0; attempt < kFinishAttempts; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
    s = db_.transact([&](pqxx::work& tx) {
      switch (result) {
        case SendResult::kSent:
          // The projection's locks first, then the row: the order every
          // event's transaction takes them in.
          record_followup_email(tx, followup_sent_event(f, message_id), projection_);
          db::mark_sent(tx, f, instance_, message_id);
          break;
        case SendResult::kRetry:
          db::mark_retry(tx, f, instance_, delay, config_.retry.max_attempts, error);
          // A 429 says SendGrid is full for everyone: hold every instance.
          if (after) db::hold_api_slot(tx, "sendgrid", *after);
          break;
        case SendResult::kDead: db::mark_dead(tx, f, instance_, error); break;
        case SendResult::kInDoubt: db::mark_in_doubt(tx, f, instance_, error); break;
      }
      db::refresh_next_follow_up(tx, {f.prospect_id});
      return Status::ok();
    });
    if (s || !s.is_transient()) break;
  }
  if (!s) return s;
  switch (result) {
    case SendResult::kSent:
      log::info("follow-up email sent", {{"followup_id", f.id},
                                         {"prospect_id", f.prospect_id},
                                         {"attempt", f.attempts}});
      break;
    case SendResult::kRetry:
      metrics_.retry("sendgrid");
      log::warn("follow-up email refused, will retry",
                {{"followup_id", f.id}, {"attempt", f.attempts},
                 {"max_attempts", config_.retry.max_attempts},
                 {"retry_in_ms", static_cast<long long>(delay.count())}, {"error", error}});
      break;
    case SendResult::kDead:
      log::error("follow-up email not sent, giving up", {{"followup_id", f.id}, {"error", error}});
      break;
    case SendResult::kInDoubt:
      log::error("follow-up email in doubt: not sent again, an operator must check",
                 {{"followup_id", f.id}, {"error", error}});
      break;
  }
  return Status::ok();
}

Status FollowupExecutor::report() {
  db::FollowupStats stats;
  std::vector<std::string> expired;
  Status s = db_.transact([&](pqxx::work& tx) {
    expired = db::fail_expired_leases(tx);
    stats = db::followup_stats(tx);
    return Status::ok();
  });
  if (!s) return s;
  for (const std::string& id : expired) {
    log::error("follow-up email in doubt: its worker stopped while sending it; not sent again, "
               "an operator must check",
               {{"followup_id", id}});
  }
  metrics_.set_followups(stats.by_status, stats.overdue_seconds);
  return Status::ok();
}

void FollowupExecutor::run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  if (kinds_.empty()) {
    log::warn("no follow-up can fire: set the SendGrid API key and sendgrid.from_email for "
              "emails, the Slack webhook for reminders and alerts; timers wait");
  } else if (std::find(kinds_.begin(), kinds_.end(), "email") == kinds_.end()) {
    log::warn("follow-up emails wait: the SendGrid API key or sendgrid.from_email is not set");
  }
  ExecutorLoop loop;
  loop.name = "follow-up executor";
  loop.report = [this] { return report(); };
  loop.step = [this]() -> Result<bool> {
    Result<FirePass> pass = fire_due();
    if (!pass) return pass.status();
    return pass->more;
  };
  loop.idle_wait = [this] {
    std::optional<Millis> next;
    Status s = db_.transact([&](pqxx::work& tx) {
      next = db::next_due_in(tx, kinds_);
      return Status::ok();
    });
    // Due but not claimable (another executor or an event's transaction
    // holds it): look again shortly, not in a tight loop.
    return s && next ? std::clamp(*next, kMinWait, kMaxWait) : kMaxWait;
  };
  loop.await = [this](Millis wait) { db_.await_notification(wait); };
  run_executor_loop(stop, loop, rng_);
  stop_ = nullptr;
}

}  // namespace crm
