#pragma once
// The notifier: sends the Slack outbox (db/notifications.h) to the incoming
// webhook, at most one message per second for all instances together, with
// Retry-After honoured on 429, retries with capped jittered backoff, and
// `dead` after retry.max_attempts or an answer that will never change (a
// 4xx such as 404 no_service or 410 channel_is_archived).
//
// Runs on a thread of its own with its own database connection; only
// started when slack.webhook_url is set.

#include <atomic>
#include <optional>
#include <random>
#include <string>

#include "daemon/config.h"
#include "daemon/core/status.h"
#include "db/database.h"
#include "db/notifications.h"
#include "http/client.h"
#include "monitoring/probes.h"

namespace crm {

class Notifier {
 public:
  Notifier(const Config& config, std::string conninfo, monitoring::Metrics& metrics,
           std::string instance);

  // Sends one notification if one is due and the shared slot is free.
  // Returns true if it claimed one; `wait` says how long until the next
  // claim could succeed otherwise.
  Result<bool> send_one(std::optional<Millis>* wait = nullptr);

  void run(const std::atomic<bool>& stop);

 private:
  const Config& config_;
  db::Database db_;
  monitoring::Metrics& metrics_;
  std::string instance_;
  http::Client http_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// The webhook body for a notification: {"text": ...}, with Slack's
// control characters (&, <, >) escaped in every value we did not write.
std::string slack_message(const db::ClaimedNotification& n);

}  // namespace crm
