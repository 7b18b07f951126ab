#include "daemon/applier.h"

#include <boost/json.hpp>

#include "daemon/core/crash_point.h"
#include "db/pg_stores.h"
#include "handlers/routing.h"

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

// Applies one event under its own savepoint. Permanent failures come back
// as a kPermanent Status after the savepoint was rolled back.
//
// Savepoints are plain SQL on the batch's transaction rather than
// pqxx::subtransaction: libpqxx 6.4 opens a subtransaction lazily and
// exec_params() does not open it, so its abort() silently rolled back
// nothing (a dead-lettered event kept its processed_events row). The
// consume-loop and replay tests catch that.
Status apply_event(pqxx::transaction_base& tx, const Event& ev, const handlers::Handler& handler,
                   bool* duplicate) {
  Status result;
  try {
    tx.exec0("SAVEPOINT crm_event");
    if (!db::record_processed(tx, ev)) {
      *duplicate = true;
      tx.exec0("RELEASE SAVEPOINT crm_event");
      return Status::ok();
    }
    db::append_timeline(tx, ev);
    db::PgProspectStore prospects(tx);
    handlers::Stores stores{prospects};
    result = handler.handle(ev, stores);
    if (result) {
      tx.exec0("RELEASE SAVEPOINT crm_event");
      return result;
    }
  } catch (...) {
    result = db::classify_exception(std::current_exception());
  }
  if (result.is_permanent()) {
    try {
      tx.exec0("ROLLBACK TO SAVEPOINT crm_event");
      tx.exec0("RELEASE SAVEPOINT crm_event");
    } catch (...) {
      return db::classify_exception(std::current_exception());
    }
  }
  return result;
}

}  // namespace

Status apply_items(pqxx::transaction_base& tx, const std::vector<WorkItem>& items,
                   std::vector<ItemResult>* results) {
  results->assign(items.size(), ItemResult{});
  for (size_t i = 0; i < items.size(); ++i) {
    const WorkItem& w = items[i];
    ItemResult& r = (*results)[i];
    Status failure;
    if (!w.item.event) {
      failure = w.item.error;
    } else if (const handlers::Handler* h = handlers::find_handler(w.item.event->type)) {
      bool duplicate = false;
      Status s = apply_event(tx, *w.item.event, *h, &duplicate);
      if (!s.is_ok() && !s.is_permanent()) return s;
      failure = s;
      if (s.is_ok()) r.outcome = duplicate ? Outcome::kDuplicate : Outcome::kApplied;
    } else {
      failure = Status::permanent("unknown_type",
                                  "no handler for event type \"" +
                                      w.item.event->type.substr(0, 64) + "\"");
    }
    if (!failure.is_ok()) {
      r.outcome = Outcome::kDeadLetter;
      r.reason = failure.reason();
      r.error = failure.message();
      try {
        r.new_dead_letter = db::insert_dead_letter(tx, dead_letter_for(w, r.reason, r.error));
      } catch (...) {
        Status s = db::classify_exception(std::current_exception());
        // A dead letter that itself cannot be stored must not be skipped:
        // treat it as transient so the batch is retried, never lost.
        if (s.is_permanent()) return Status::transient("dead_letter_write", s.message());
        return s;
      }
    }
  }
  crash_point("before_db_commit");
  return Status::ok();
}

Status apply_batch(db::Database& db, const std::vector<WorkItem>& items,
                   std::vector<ItemResult>* results) {
  return db.transact([&](pqxx::work& tx) { return apply_items(tx, items, results); });
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
