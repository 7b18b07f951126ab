#include "daemon/notifier.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include <boost/json.hpp>

#include "daemon/core/backoff.h"
#include "daemon/core/stoppable.h"
#include "daemon/logging.h"
#include "db/followups.h"
#include "http/retry.h"

namespace crm {
namespace {

namespace json = boost::json;

constexpr Millis kMaxWait{1000};
constexpr Millis kMinWait{50};

// Slack's mrkdwn gives &, < and > a meaning; text from events must not.
std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string field(const json::object& payload, std::string_view key) {
  const json::value* v = payload.if_contains(key);
  if (v == nullptr) return "";
  if (v->is_string()) return std::string(v->get_string());
  return json::serialize(*v);
}

}  // namespace

std::string slack_message(const db::ClaimedNotification& n) {
  json::object payload;
  if (auto parsed = json::parse(n.payload_json); parsed.is_object()) payload = parsed.get_object();
  std::string who = n.name ? escape(*n.name) : "prospect";
  if (n.company) who += " (" + escape(*n.company) + ")";
  if (n.prospect_id) who += " [" + escape(*n.prospect_id) + "]";
  std::string text;
  if (n.kind == "reply_received") {
    text = "Reply received from " + who + ".";
  } else if (n.kind == "call_completed") {
    text = "Call completed with " + who + ".";
  } else if (n.kind == "payment") {
    text = "Payment received from " + who + ".";
  } else if (n.kind == "lead_score") {
    text = who + " reached lead score " + escape(field(payload, "threshold")) + ".";
  } else if (n.kind == "call_reminder") {
    text = "Reminder: call with " + who;
    const std::string at = field(payload, "scheduled_at");
    text += at.empty() ? " soon." : " at " + escape(at) + ".";
  } else if (n.kind == "stale_deal") {
    const std::string deal = field(payload, "deal_id");
    text = (deal.empty() ? "A deal" : "Deal " + escape(deal)) + " with " + who +
           " has had no activity for a while.";
  } else {
    text = escape(n.kind) + ": " + who + ".";
  }
  return json::serialize(json::object{{"text", text}});
}

Notifier::Notifier(const Config& config, std::string conninfo, monitoring::Metrics& metrics,
                   std::string instance)
    : config_(config),
      db_(std::move(conninfo)),
      metrics_(metrics),
      instance_(std::move(instance)),
      http_(http::ClientOptions{.connect_timeout = std::min(config.slack.timeout, Millis{5000})}) {}

Result<bool> Notifier::send_one(std::optional<Millis>* wait) {
  db::NotificationClaim claim;
  Status s = db_.transact([&](pqxx::work& tx) {
    db::retry_expired_notifications(tx, config_.retry.max_attempts);
    claim = db::claim_notification(tx, instance_, config_.slack.timeout + Millis{5000});
    return Status::ok();
  });
  if (!s) return s;
  if (wait != nullptr) *wait = claim.wait;
  if (!claim.item) return false;
  const db::ClaimedNotification& n = *claim.item;

  http::Request request;
  request.url = config_.slack.webhook_url.reveal();
  request.headers = {{"Content-Type", "application/json"}};
  request.body = slack_message(n);
  request.timeout = config_.slack.timeout;
  const http::Response response = http_.post(request);
  metrics_.external_request("slack", http::response_code_label(response), response.seconds);

  const http::Verdict verdict = http::classify(response);
  const std::string error = response.outcome == http::Outcome::kAnswered
                                ? "Slack answered " + std::to_string(response.status)
                                : "Slack: " + response.error;
  // The last allowed attempt failed: notification_retry makes the row
  // `dead`, and the log and crm_worker_retries_total must not say "retry".
  const bool exhausted =
      verdict == http::Verdict::kRetry && n.attempts >= config_.retry.max_attempts;
  Millis delay{0};
  std::optional<Millis> after;
  if (verdict == http::Verdict::kRetry) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    delay = backoff_delay(n.attempts - 1, config_.retry.initial_backoff, config_.retry.max_backoff,
                          unit(rng_));
    after = http::retry_after(response, now_timestamp());
    if (after) delay = std::max(delay, *after);
  }
  s = db_.transact([&](pqxx::work& tx) {
    switch (verdict) {
      case http::Verdict::kSuccess: db::notification_sent(tx, n.id); break;
      case http::Verdict::kRetry:
        db::notification_retry(tx, n.id, delay, config_.retry.max_attempts, error);
        if (after) db::hold_api_slot(tx, "slack", *after);
        break;
      case http::Verdict::kGiveUp: db::notification_dead(tx, n.id, error); break;
    }
    return Status::ok();
  });
  if (!s) return s;  // left `sending`: sent again after its lease
  switch (verdict) {
    case http::Verdict::kSuccess:
      log::info("Slack notification sent", {{"notification_id", n.id}, {"kind", n.kind}});
      break;
    case http::Verdict::kRetry:
      if (exhausted) {
        log::error("Slack notification failed, out of attempts, giving up",
                   {{"notification_id", n.id}, {"attempt", n.attempts},
                    {"max_attempts", config_.retry.max_attempts}, {"error", error}});
        break;
      }
      metrics_.retry("slack");
      log::warn("Slack notification failed, will retry",
                {{"notification_id", n.id}, {"attempt", n.attempts},
                 {"max_attempts", config_.retry.max_attempts},
                 {"retry_in_ms", static_cast<long long>(delay.count())}, {"error", error}});
      break;
    case http::Verdict::kGiveUp:
      log::error("Slack notification refused, giving up",
                 {{"notification_id", n.id}, {"error", error}});
      break;
  }
  return true;
}

void Notifier::run(const std::atomic<bool>& stop) {
  int failures = 0;
  while (!stop.load()) {
    std::optional<Millis> wait;
    Result<bool> sent = send_one(&wait);
    Millis pause = kMaxWait;
    if (!sent) {
      if (failures++ % 10 == 0) {
        log::warn("notifier: database error, retrying", {{"error", sent.status().message()}});
      }
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      pause = backoff_delay(std::min(failures, 6), Millis{250}, Millis{5000}, unit(rng_));
    } else {
      failures = 0;
      if (*sent) continue;
      if (wait) pause = std::clamp(*wait, kMinWait, kMaxWait);
    }
    sleep_unless_stopped(stop, pause);
  }
}

}  // namespace crm
