#pragma once
// The Slack outbox (SPEC.md §6): notifications queued by the projections
// (reply received, call completed, payment, lead score) and by the
// follow-up executor (call reminders, stale deals), sent by the notifier.
//
//   pending ──claim──► sending ──2xx──► sent
//                         ├─ retryable (timeout, 408, 429, 5xx) ─► failed ─(later)─► sending
//                         └─ refused for good, or out of attempts ─► dead
//
// At most one message per second for ALL instances together: a claim must
// also move the shared `slack` slot (api_slots) forward from the past, so
// two instances cannot both send in the same second. A 429 holds the slot
// for its Retry-After. A crash while `sending` sends the message again
// after its lease (within retry.max_attempts): Slack may see it twice.

#include <optional>
#include <string>

#include <pqxx/pqxx>

#include "daemon/core/time.h"

namespace crm::db {

struct ClaimedNotification {
  std::string id;
  std::string kind;
  std::optional<std::string> prospect_id;
  std::optional<std::string> name;     // the prospect's, when known
  std::optional<std::string> company;
  std::string payload_json;
  int attempts = 0;                    // this one included
};

struct NotificationClaim {
  std::optional<ClaimedNotification> item;
  // Nothing claimed: how long until a claim could succeed (the slot frees,
  // a retry comes due); nullopt when nothing waits.
  std::optional<Millis> wait;
};

NotificationClaim claim_notification(pqxx::transaction_base& tx, const std::string& owner,
                                     Millis lease);
void notification_sent(pqxx::transaction_base& tx, const std::string& id);
// Another attempt after `delay`, or dead once `max_attempts` were made.
void notification_retry(pqxx::transaction_base& tx, const std::string& id, Millis delay,
                        int max_attempts, const std::string& error);
void notification_dead(pqxx::transaction_base& tx, const std::string& id, const std::string& error);
// Rows left `sending` past their lease: due again now, or dead if that was
// their last attempt. Returns how many.
int retry_expired_notifications(pqxx::transaction_base& tx, int max_attempts);

}  // namespace crm::db
