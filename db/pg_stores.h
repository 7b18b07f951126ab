#pragma once
// The dead_letters table: what the applier writes for an event it cannot
// apply, and what `crm-worker dlq replay` asks the daemon to apply again.
// (The facts and their projections are in db/projections.h.)
//
// Every object here is bound to one open transaction (or savepoint) and used
// on the consumer thread only. SQL is always parameterised.

#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "handlers/event.h"

namespace crm::db {

// A message (or SendGrid element) that cannot be applied.
struct DeadLetter {
  MessageOrigin origin;
  std::optional<std::string> key;
  std::string payload;  // raw bytes
  std::string headers_json;  // JSON array of {"name","value"|"value_hex"}
  std::string reason;
  std::string error;
  std::string event_id;    // empty when the message could not be decoded
  std::string event_type;
};

// Inserts the dead_letters row; a redelivered message finds its row already
// there and changes nothing. Returns true if the row is new.
bool insert_dead_letter(pqxx::transaction_base& tx, const DeadLetter& dl);

// A dead letter an operator asked to replay (`crm-worker dlq replay`).
struct ReplayRequest {
  std::string id;
  MessageOrigin origin;
  std::optional<std::string> key;
  std::string payload;
  std::string headers_json;
  std::string error;  // the dead letter's error text before the claim
};

// Claims up to `limit` requested replays (FOR UPDATE SKIP LOCKED, so
// several instances never replay the same one) and marks them begun, with
// an error saying so, in the same statement: commit that before decoding
// them. If one kills the worker, it stays a dead letter with that error
// instead of killing every worker that starts after it. `crashed_worker`
// picks the dead letters of that reason (replay those one at a time) or
// the others.
std::vector<ReplayRequest> claim_replays(pqxx::transaction_base& tx, int limit, bool crashed_worker);
// Asks again for a claimed replay that did not happen (the database failed,
// not the worker), with the dead letter's error as it was.
void unclaim_replay(pqxx::transaction_base& tx, const ReplayRequest& req);
// The rows of a claim, in its column order.
std::vector<ReplayRequest> replay_requests(const pqxx::result& r);
void mark_replayed(pqxx::transaction_base& tx, const ReplayRequest& req);
void mark_replay_failed(pqxx::transaction_base& tx, const std::string& id,
                        const std::string& reason, const std::string& error);

// True if `s` is valid UTF-8 without NUL, i.e. storable as PostgreSQL text.
bool is_storable_text(std::string_view s);

}  // namespace crm::db
