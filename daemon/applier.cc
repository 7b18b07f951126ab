#include "daemon/applier.h"

#include <map>

#include <boost/json.hpp>

#include "daemon/core/crash_point.h"
#include "db/pg_stores.h"
#include "db/projections.h"
#include "handlers/routing.h"
#include "queue/decode.h"

namespace crm {
namespace {

db::DeadLetter dead_letter_for(const WorkItem& w, const std::string& reason,
                               const std::string& error) {
  db::DeadLetter dl;
  dl.origin = w.item.origin;
  dl.key = w.key;
  dl.payload = w.item.payload;
  dl.headers_json = w.headers_json;
  dl.reason = reason;
  dl.error = error;
  if (w.item.event) {
    dl.event_id = w.item.event->id;
    dl.event_type = w.item.event->type;
  }
  return dl;
}

// One item that passed its contract check, ready to be recorded.
struct Pending {
  size_t index;  // into the batch
  handlers::Fact fact;
};

// Records the facts and recomputes what the new ones touch; marks the
// redelivered ones as duplicates.
void apply_facts(pqxx::transaction_base& tx, const std::vector<WorkItem>& items,
                 const std::vector<const Pending*>& pending, const db::ProjectionOptions& options,
                 std::vector<ItemResult>* results) {
  std::vector<db::FactRow> rows;
  for (const Pending* p : pending) rows.push_back({&*items[p->index].item.event, &p->fact});
  std::vector<bool> fresh = db::record_facts(tx, rows);
  std::vector<db::FactRow> new_rows;
  for (size_t k = 0; k < rows.size(); ++k) {
    (*results)[pending[k]->index].outcome = fresh[k] ? Outcome::kApplied : Outcome::kDuplicate;
    if (fresh[k]) new_rows.push_back(rows[k]);
  }
  db::project(tx, new_rows, options);
}

// Runs `body` under a savepoint. A permanent failure rolls the savepoint
// back and is returned; transient and fatal ones are returned as they are
// (the whole transaction is lost then).
//
// Savepoints are plain SQL on the batch's transaction rather than
// pqxx::subtransaction: libpqxx 6.4 opens a subtransaction lazily and
// exec_params() does not open it, so its abort() silently rolled back
// nothing. The applier tests catch that.
template <typename Body>
Status under_savepoint(pqxx::transaction_base& tx, const char* name, Body&& body) {
  Status result;
  try {
    tx.exec0(std::string("SAVEPOINT ") + name);
    body();
    tx.exec0(std::string("RELEASE SAVEPOINT ") + name);
    return Status::ok();
  } catch (...) {
    result = db::classify_exception(std::current_exception());
  }
  if (result.is_permanent()) {
    try {
      tx.exec0(std::string("ROLLBACK TO SAVEPOINT ") + name);
      tx.exec0(std::string("RELEASE SAVEPOINT ") + name);
    } catch (...) {
      return db::classify_exception(std::current_exception());
    }
  }
  return result;
}

}  // namespace

Status apply_items(pqxx::transaction_base& tx, const std::vector<WorkItem>& items,
                   const db::ProjectionOptions& options, std::vector<ItemResult>* results) {
  results->assign(items.size(), ItemResult{});
  db::prefer_index_lookups(tx);
  std::vector<Status> failures(items.size());
  std::vector<Pending> pending;
  std::map<std::string, size_t> first_of_id;
  for (size_t i = 0; i < items.size(); ++i) {
    const WorkItem& w = items[i];
    if (!w.item.event) {
      failures[i] = w.item.error;
      continue;
    }
    const Event& ev = *w.item.event;
    const handlers::Handler* h = handlers::find_handler(ev.type);
    if (h == nullptr) {
      failures[i] = Status::permanent("unknown_type",
                                      "no handler for event type " + queue::quote_value(ev.type));
      continue;
    }
    Result<handlers::Fact> fact = h->extract(ev);
    if (!fact) {
      failures[i] = fact.status();
      continue;
    }
    // The same event twice in one batch: the first one speaks for both.
    if (!first_of_id.emplace(ev.id, i).second) {
      (*results)[i].outcome = Outcome::kDuplicate;
      continue;
    }
    pending.push_back({i, std::move(*fact)});
  }

  std::vector<const Pending*> all;
  for (const Pending& p : pending) all.push_back(&p);
  Status batch = under_savepoint(tx, "crm_batch", [&] { apply_facts(tx, items, all, options, results); });
  if (batch.is_permanent()) {
    // Find the event the database refuses: one at a time.
    for (const Pending& p : pending) {
      Status one = under_savepoint(tx, "crm_event", [&] { apply_facts(tx, items, {&p}, options, results); });
      if (one.is_permanent()) {
        failures[p.index] = one;
      } else if (!one) {
        return one;
      }
    }
  } else if (!batch) {
    return batch;
  }

  for (size_t i = 0; i < items.size(); ++i) {
    if (failures[i].is_ok()) continue;
    ItemResult& r = (*results)[i];
    r.outcome = Outcome::kDeadLetter;
    r.reason = failures[i].reason();
    r.error = failures[i].message();
    try {
      r.new_dead_letter = db::insert_dead_letter(tx, dead_letter_for(items[i], r.reason, r.error));
    } catch (...) {
      Status s = db::classify_exception(std::current_exception());
      // A dead letter that itself cannot be stored must not be skipped:
      // treat it as transient so the batch is retried, never lost.
      if (s.is_permanent()) return Status::transient("dead_letter_write", s.message());
      return s;
    }
  }
  crash_point("before_db_commit");
  return Status::ok();
}

std::set<std::string> conflict_keys(const WorkItem& w) {
  std::set<std::string> keys;
  if (!w.item.event) return keys;
  const Event& ev = *w.item.event;
  const handlers::Handler* h = handlers::find_handler(ev.type);
  if (h == nullptr) return keys;
  Result<handlers::Fact> fact = h->extract(ev);
  if (!fact) return keys;
  keys.insert("event:" + ev.id);
  db::add_lock_keys(ev, *fact, keys);
  return keys;
}

Status apply_batch(db::Database& db, const std::vector<WorkItem>& items,
                   const db::ProjectionOptions& options, std::vector<ItemResult>* results) {
  return db.transact([&](pqxx::work& tx) { return apply_items(tx, items, options, results); });
}

std::string headers_to_json(const queue::RawMessage& msg) {
  boost::json::array arr;
  for (const auto& [name, value] : msg.headers) {
    boost::json::object h;
    h["name"] = db::is_storable_text(name) ? name : "hex:" + db::to_hex(name);
    if (!value) {
      h["value"] = nullptr;
    } else if (db::is_storable_text(*value)) {
      h["value"] = *value;
    } else {
      h["value_hex"] = db::to_hex(*value);
    }
    arr.push_back(std::move(h));
  }
  return boost::json::serialize(arr);
}

queue::RawMessage raw_message_from_dead_letter(const MessageOrigin& origin,
                                               const std::optional<std::string>& key,
                                               const std::string& payload,
                                               const std::string& headers_json) {
  queue::RawMessage m;
  m.origin = origin;
  m.origin.element = -1;
  m.key = key;
  m.value = payload;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(headers_json, ec);
  if (!ec && v.is_array()) {
    for (const auto& h : v.get_array()) {
      if (!h.is_object()) continue;
      const auto& o = h.get_object();
      const auto* name = o.if_contains("name");
      if (name == nullptr || !name->is_string()) continue;
      std::optional<std::string> value;
      if (const auto* t = o.if_contains("value"); t && t->is_string()) {
        value = std::string(t->get_string());
      } else if (const auto* x = o.if_contains("value_hex"); x && x->is_string()) {
        value = db::from_hex(std::string_view(x->get_string()));
      }
      m.headers.emplace_back(std::string(name->get_string()), value);
    }
  }
  return m;
}

}  // namespace crm
