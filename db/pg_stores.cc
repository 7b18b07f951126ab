#include "db/pg_stores.h"

#include <algorithm>

#include "db/database.h"

namespace crm::db {
namespace {

// nullptr for SQL NULL.
const char* opt(const std::optional<std::string>& v) { return v ? v->c_str() : nullptr; }

}  // namespace

bool is_storable_text(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    if (c == 0) return false;
    int extra;
    unsigned cp;
    if (c < 0x80) { i++; continue; }
    if ((c & 0xe0) == 0xc0) { extra = 1; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { extra = 2; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { extra = 3; cp = c & 0x07; }
    else return false;
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

bool insert_dead_letter(pqxx::transaction_base& tx, const DeadLetter& dl) {
  // The key column is text: a key that is not valid UTF-8 is kept as hex.
  std::optional<std::string> key = dl.key;
  if (key && !is_storable_text(*key)) key = "hex:" + to_hex(*key);
  auto text_or_null = [](const std::string& s) -> const char* {
    return s.empty() ? nullptr : s.c_str();
  };
  std::string error = is_storable_text(dl.error) ? dl.error : "(unprintable error)";
  pqxx::result r = tx.exec_params(
      "INSERT INTO dead_letters (id, topic, partition, \"offset\", element, key, payload,"
      "  headers, reason, error, event_id, event_type)"
      " VALUES ($1, $2, $3, $4, $5, $6, decode($7, 'hex'), $8::jsonb, $9, $10, $11, $12)"
      " ON CONFLICT (id) DO NOTHING",
      dl.origin.id(), dl.origin.topic, dl.origin.partition, dl.origin.offset, dl.origin.element,
      opt(key), to_hex(dl.payload), dl.headers_json.empty() ? "[]" : dl.headers_json, dl.reason,
      error, text_or_null(is_storable_text(dl.event_id) ? dl.event_id : std::string()),
      text_or_null(is_storable_text(dl.event_type) ? dl.event_type : std::string()));
  return r.affected_rows() == 1;
}

std::vector<ReplayRequest> claim_replays(pqxx::transaction_base& tx, int limit, bool crashed_worker) {
  pqxx::result r = tx.exec_params(
      "WITH claimed AS ("
      "  SELECT id, error FROM dead_letters"
      "   WHERE replay_requested_at IS NOT NULL AND replayed_at IS NULL"
      "     AND (reason = 'crashed_worker') = $2"
      "   ORDER BY replay_requested_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
      " UPDATE dead_letters d"
      "    SET replay_requested_at = NULL, last_failed_at = now(),"
      "        error = 'replay begun; a worker that died during it left it here'"
      "   FROM claimed WHERE d.id = claimed.id"
      " RETURNING d.id, d.topic, d.partition, d.\"offset\", d.element, d.key, encode(d.payload, 'hex'),"
      "   d.headers::text, claimed.error",
      limit, crashed_worker);
  std::vector<ReplayRequest> out = replay_requests(r);
  std::sort(out.begin(), out.end(), [](const ReplayRequest& a, const ReplayRequest& b) { return a.id < b.id; });
  return out;
}

void unclaim_replay(pqxx::transaction_base& tx, const ReplayRequest& req) {
  tx.exec_params(
      "UPDATE dead_letters SET replay_requested_at = now(), error = $2"
      " WHERE id = $1 AND replayed_at IS NULL",
      req.id, req.error);
}

std::vector<ReplayRequest> replay_requests(const pqxx::result& r) {
  std::vector<ReplayRequest> out;
  for (const auto& row : r) {
    ReplayRequest q;
    q.id = row[0].as<std::string>();
    q.origin.topic = row[1].as<std::string>();
    q.origin.partition = row[2].as<int>();
    q.origin.offset = row[3].as<long long>();
    q.origin.element = row[4].as<int>();
    if (!row[5].is_null()) q.key = row[5].as<std::string>();
    q.payload = row[6].is_null() ? "" : from_hex(row[6].as<std::string>());
    q.headers_json = row[7].is_null() ? "[]" : row[7].as<std::string>();
    if (row.size() > 8) q.error = row[8].as<std::string>();
    out.push_back(std::move(q));
  }
  return out;
}

void mark_replayed(pqxx::transaction_base& tx, const ReplayRequest& req) {
  tx.exec_params(
      "UPDATE dead_letters SET replayed_at = now(), replay_requested_at = NULL, error = $2 WHERE id = $1",
      req.id, req.error);
}

void mark_replay_failed(pqxx::transaction_base& tx, const std::string& id,
                        const std::string& reason, const std::string& error) {
  tx.exec_params(
      "UPDATE dead_letters SET replay_requested_at = NULL, attempts = attempts + 1,"
      "  last_failed_at = now(), reason = $2, error = $3 WHERE id = $1",
      id, reason, is_storable_text(error) ? error : "(unprintable error)");
}

}  // namespace crm::db
