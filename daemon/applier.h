#pragma once
// Applies a batch of decoded items in ONE database transaction.
//
// Each event is checked against its type's contract (handlers/) and becomes
// a fact; the facts are recorded together (processed_events: a duplicate
// stops there) and every row they touch is recomputed from the timeline
// (db/projections.h), with one statement per table for the whole batch. An
// item that fails permanently (undecodable, unknown type, contract
// violation) becomes a dead_letters row in the same transaction, so the
// batch's other events still apply and the commit covers everything the
// offsets will say is done.
//
// If the database itself rejects the batch (a value PostgreSQL refuses that
// the contract checks let through), the batch is rolled back to a savepoint
// and applied again one event at a time, each under its own savepoint, so
// only the culprit is dead-lettered (reason db_rejected).
//
// A transient or fatal error anywhere aborts the whole transaction and is
// returned: the caller retries the same batch later (nothing was written).
//
// Used on the consumer thread by the consume loop and by dead-letter replay.

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/core/status.h"
#include "db/database.h"
#include "db/projections.h"
#include "queue/decode.h"

namespace crm {

struct WorkItem {
  queue::DecodedItem item;
  std::optional<std::string> key;
  std::string headers_json;  // for the dead letter, "[]" when none
};

enum class Outcome { kApplied, kDuplicate, kDeadLetter };

struct ItemResult {
  Outcome outcome = Outcome::kApplied;
  std::string reason;  // dead letters: a stable token
  std::string error;   // dead letters: one human line
  bool new_dead_letter = false;  // false when a redelivery found the row already there
};

// Applies the items inside an already open transaction. Returns ok with
// one result per item, or the transient/fatal error that must abort `tx`.
Status apply_items(pqxx::transaction_base& tx, const std::vector<WorkItem>& items,
                   const db::ProjectionOptions& options, std::vector<ItemResult>* results);

// The same, in a transaction of its own on `db`.
Status apply_batch(db::Database& db, const std::vector<WorkItem>& items,
                   const db::ProjectionOptions& options, std::vector<ItemResult>* results);

// The keys the item's event locks first when applied (db::add_lock_keys),
// and "event:<id>": items that share none can be applied in transactions
// side by side without waiting on each other. None for an item that will be
// a dead letter.
std::set<std::string> conflict_keys(const WorkItem& item);

// Headers of a Kafka message as the JSON kept with its dead letter.
std::string headers_to_json(const queue::RawMessage& msg);

// Rebuilds a RawMessage from a stored dead letter (for replay).
queue::RawMessage raw_message_from_dead_letter(const MessageOrigin& origin,
                                               const std::optional<std::string>& key,
                                               const std::string& payload,
                                               const std::string& headers_json);

}  // namespace crm
