#include "db/pg_stores.h"

#include "db/database.h"

namespace crm::db {
namespace {

// PostgreSQL parses RFC 3339 with a zone as timestamptz exactly.
std::string ts(Timestamp t) { return format_rfc3339(t); }

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

Status PgProspectStore::apply_discovered(const handlers::ProspectProfile& p, Timestamp at,
                                         const std::string& event_id) {
  tx_.exec_params(
      "INSERT INTO prospects (id, created_at, updated_at) VALUES ($1, now(), now()) "
      "ON CONFLICT (id) DO NOTHING",
      p.id);
  // Lock the row before reading the timeline: under READ COMMITTED, an
  // UPDATE that waits for another transaction's lock on this row would
  // otherwise write values computed from a snapshot without that
  // transaction's event, and the older profile could win.
  tx_.exec_params("SELECT 1 FROM prospects WHERE id = $1 FOR UPDATE", p.id);
  // Each field takes the value of the newest discovered event that carries
  // it. Recomputing from the timeline (which holds every applied event once)
  // makes the result independent of arrival order; discovered events are
  // rare per prospect, so the scan is short.
  tx_.exec_params(
      "WITH f AS ("
      "  SELECT"
      "   (array_agg(details->>'name' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'name' IS NOT NULL))[1] AS name,"
      "   (array_agg(details->>'email' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'email' IS NOT NULL))[1] AS email,"
      "   (array_agg(details->>'phone' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'phone' IS NOT NULL))[1] AS phone,"
      "   (array_agg(details->>'company' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'company' IS NOT NULL))[1] AS company,"
      "   (array_agg(details->>'source' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'source' IS NOT NULL))[1] AS source,"
      "   (array_agg(details->>'category' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'category' IS NOT NULL))[1] AS category,"
      "   (array_agg(details->>'urgency' ORDER BY occurred_at DESC, event_id DESC)"
      "      FILTER (WHERE details->>'urgency' IS NOT NULL))[1] AS urgency,"
      "   max(occurred_at) AS latest"
      "  FROM outreach_activities"
      "  WHERE prospect_id = $1 AND type = 'crm.prospect.discovered')"
      "UPDATE prospects p SET"
      "  name = COALESCE(f.name, p.name), email = COALESCE(f.email, p.email),"
      "  phone = COALESCE(f.phone, p.phone), company = COALESCE(f.company, p.company),"
      "  source = COALESCE(f.source, p.source), category = COALESCE(f.category, p.category),"
      "  urgency = COALESCE(f.urgency, p.urgency),"
      "  profile_updated_at = GREATEST(p.profile_updated_at, f.latest, $2::timestamptz),"
      "  updated_at = now()"
      " FROM f WHERE p.id = $1",
      p.id, ts(at));
  (void)event_id;
  return Status::ok();
}

Status PgProspectStore::record_stage(const std::string& prospect_id, const std::string& stage,
                                     Timestamp at, const std::string& notes) {
  tx_.exec_params(
      "INSERT INTO pipeline_stages (prospect_id, stage, stage_date, notes)"
      " VALUES ($1, $2, $3::timestamptz, NULLIF($4, ''))"
      " ON CONFLICT (prospect_id, stage) DO UPDATE SET"
      "  notes = CASE WHEN EXCLUDED.stage_date < pipeline_stages.stage_date"
      "               THEN EXCLUDED.notes ELSE pipeline_stages.notes END,"
      "  stage_date = LEAST(pipeline_stages.stage_date, EXCLUDED.stage_date)",
      prospect_id, stage, ts(at), notes);
  return Status::ok();
}

bool record_processed(pqxx::transaction_base& tx, const Event& e) {
  pqxx::result r = tx.exec_params(
      "INSERT INTO processed_events (event_id, topic, partition, \"offset\", event_type)"
      " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
      e.id, e.origin.topic, e.origin.partition, e.origin.offset, e.type);
  return r.affected_rows() == 1;
}

void append_timeline(pqxx::transaction_base& tx, const Event& e) {
  const boost::json::value* pid = e.data.if_contains("prospect_id");
  std::optional<std::string> prospect;
  if (pid != nullptr && pid->is_string()) prospect = std::string(pid->get_string());
  tx.exec_params(
      "INSERT INTO outreach_activities (event_id, prospect_id, type, occurred_at, details)"
      " VALUES ($1, $2, $3, $4::timestamptz, $5::jsonb) ON CONFLICT (event_id) DO NOTHING",
      e.id, opt(prospect), e.type, ts(e.time), boost::json::serialize(e.data));
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

std::vector<ReplayRequest> claim_replays(pqxx::transaction_base& tx, int limit) {
  pqxx::result r = tx.exec_params(
      "SELECT id, topic, partition, \"offset\", element, key, encode(payload, 'hex'),"
      "  headers::text"
      " FROM dead_letters"
      " WHERE replay_requested_at IS NOT NULL AND replayed_at IS NULL"
      " ORDER BY replay_requested_at, id"
      " LIMIT $1 FOR UPDATE SKIP LOCKED",
      limit);
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
    out.push_back(std::move(q));
  }
  return out;
}

void mark_replayed(pqxx::transaction_base& tx, const std::string& id) {
  tx.exec_params(
      "UPDATE dead_letters SET replayed_at = now(), replay_requested_at = NULL WHERE id = $1", id);
}

void mark_replay_failed(pqxx::transaction_base& tx, const std::string& id,
                        const std::string& reason, const std::string& error) {
  tx.exec_params(
      "UPDATE dead_letters SET replay_requested_at = NULL, attempts = attempts + 1,"
      "  last_failed_at = now(), reason = $2, error = $3 WHERE id = $1",
      id, reason, is_storable_text(error) ? error : "(unprintable error)");
}

}  // namespace crm::db
