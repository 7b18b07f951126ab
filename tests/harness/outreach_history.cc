#include "tests/harness/outreach_history.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <boost/json.hpp>

#include "daemon/consume_loop.h"
#include "daemon/core/time.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

namespace json = boost::json;

// 2026-03-01T00:00:00Z
constexpr std::int64_t kBaseSeconds = 1772323200;

class Generator {
 public:
  Generator(unsigned seed, const HistoryShape& shape) : rng_(seed), shape_(shape) {}

  std::vector<HistoryEvent> run() {
    for (int k = 0; k < shape_.prospects; ++k) prospect(k, "p" + std::to_string(k));
    return std::move(out_);
  }

 private:
  int pick(int n) { return static_cast<int>(rng_() % static_cast<unsigned>(n)); }
  bool chance(int percent) { return pick(100) < percent; }
  // Seconds since the base, coarse enough that events share seconds.
  std::int64_t at(std::int64_t lo, std::int64_t span) { return lo + pick(static_cast<int>(span)); }

  void cloud(const std::string& pid, const std::string& type, std::int64_t sec, json::object data,
             const std::string& entity) {
    HistoryEvent e;
    e.topic = type.rfind("crm.followup.", 0) == 0                                    ? "crm.followups"
              : type.rfind("crm.sync.", 0) == 0 || type.rfind("hubspot.", 0) == 0 ? "crm.sync.jobs"
                                                                                   : "crm.outreach.events";
    e.key = pid;
    e.id = "ev-" + std::to_string(next_id_++);
    e.type = type;
    e.time_us = (kBaseSeconds + sec) * 1'000'000;
    e.prospect_id = pid;
    e.entity_id = entity;
    json::object ce{{"specversion", "1.0"}, {"id", e.id}, {"source", "crm-web"}, {"type", type},
                    {"time", format_rfc3339(Timestamp{e.time_us})}, {"data", std::move(data)}};
    e.value = json::serialize(ce);
    out_.push_back(std::move(e));
  }

  // A SendGrid webhook element; with custom args, or named by the message
  // id alone (an "orphan" until its crm.email.sent is applied).
  void sendgrid(const std::string& pid, const std::string& email, const std::string& message_id,
                const std::string& sg_event, const std::string& type, std::int64_t sec,
                bool custom_args, bool machine) {
    HistoryEvent e;
    e.topic = "sendgrid.events";
    e.id = "sg-" + std::to_string(next_id_++);
    e.type = type;
    e.time_us = (kBaseSeconds + sec) * 1'000'000;
    e.prospect_id = pid;
    e.entity_id = email;
    e.machine_open = machine;
    json::object el{{"email", pid + "@example.com"},
                     {"timestamp", kBaseSeconds + sec},
                     {"event", sg_event},
                     {"sg_event_id", e.id},
                     {"sg_message_id", message_id + ".filterdrecv-5645d9c87f-" + std::to_string(pick(9))}};
    if (custom_args) {
      el["email_id"] = email;
      el["prospect_id"] = pid;
    }
    if (machine) el["sg_machine_open"] = true;
    if (sg_event == "bounce" || sg_event == "dropped") el["reason"] = "550 5.1.1 unknown user";
    if (sg_event == "click") el["url"] = "https://example.com/pricing?x=" + std::to_string(pick(3));
    e.key = custom_args ? pid : message_id;
    e.value = json::serialize(json::array{el});
    out_.push_back(std::move(e));
  }

  void prospect(int k, const std::string& pid) {
    const char* fields[] = {"email", "phone", "company", "source", "category", "urgency"};
    for (int n = 1 + pick(2); n > 0; --n) {
      json::object d{{"prospect_id", pid}, {"name", "Name " + std::to_string(pick(50))}};
      for (const char* f : fields) {
        if (chance(50)) d[f] = std::string(f) + "-" + std::to_string(pick(100));
      }
      static const char* kZones[] = {"Europe/Berlin", "America/New_York", "Not/AZone"};
      if (chance(40)) d["time_zone"] = kZones[pick(3)];
      cloud(pid, "crm.prospect.discovered", at(0, 7200), std::move(d), "");
    }
    for (int j = 0, n = 1 + pick(shape_.max_emails); j < n; ++j) email(pid, pid + "-e" + std::to_string(j));
    for (int j = 0, n = pick(shape_.max_sms + 1); j < n; ++j) sms(pid, pid + "-s" + std::to_string(j));
    for (int j = 0, n = pick(shape_.max_calls + 1); j < n; ++j) call(pid, pid + "-c" + std::to_string(j));
    if (chance(60)) deal(pid, pid + "-d0");
    if (chance(40)) payments(pid);
    if (chance(60)) followup(pid, pid + "-f0");
    // Sync requests for a few shared companies and this prospect's deal,
    // upserts and deletes in any order.
    for (int n = pick(3); n > 0; --n) {
      static const char* kOps[] = {"upsert", "upsert", "delete"};
      const bool company = chance(50);
      cloud(pid, "crm.sync.requested", at(0, 3 * 86400),
            {{"entity_type", company ? "company" : "deal"},
             {"entity_id", company ? "co" + std::to_string(pick(3)) : pid + "-d0"},
             {"operation", kOps[pick(3)]}},
            "");
    }
    // Cancelling an automatic row by its id, naming no prospect.
    if (chance(20)) cloud(pid, "crm.followup.cancelled", at(3600, 2 * 86400),
                          {{"followup_id", pid + "-e0:followup:1"}}, pid + "-e0:followup:1");
    for (int n = pick(shape_.max_hubspot_changes + 1); n > 0; --n) hubspot_change(k, pid);
  }

  // A change made in HubSpot: mostly to this prospect's deal (seeded with
  // HubSpot id "hs-d<k>" for two prospects in three, see seed_web_app_rows;
  // the web app wrote it at day 2 + k hours, and the changes fall between
  // day 1 and day 4, so about half are older than that write), sometimes to
  // a deal no row knows, a company or a contact (owned locally: no effect).
  void hubspot_change(int k, const std::string& pid) {
    std::string object_type = "deal", object_id = "hs-d" + std::to_string(k), property;
    json::value value;
    const int what = pick(10);
    if (what == 7) {
      object_id = "hs-unknown-" + std::to_string(pick(3));
    } else if (what == 8) {
      object_type = "company";
      object_id = "hs-co" + std::to_string(pick(3));
    } else if (what == 9) {
      object_type = "contact";
      object_id = "hs-ct" + std::to_string(k);
    }
    if (object_type == "deal") {
      static const char* kProperties[] = {"dealstage", "dealstage", "amount", "amount", "closedate",
                                          "dealname", "hs_priority"};
      property = kProperties[pick(std::size(kProperties))];
    } else {
      property = object_type == "company" ? "name" : "email";
    }
    if (property == "dealstage") {
      // closedwon / closedlost map back to ours; the others are kept as
      // HubSpot names them; "" is a cleared stage (ignored).
      static const char* kStages[] = {"closedwon", "closedlost", "appointmentscheduled",
                                      "qualifiedtobuy", ""};
      value = kStages[pick(std::size(kStages))];
    } else if (property == "amount") {
      static const char* kAmounts[] = {"1500", "2500.50", "99.99", ""};
      if (chance(15)) {
        value = nullptr;  // cleared, said with null
      } else {
        value = kAmounts[pick(std::size(kAmounts))];
      }
    } else if (property == "closedate") {
      // An ISO date, a time with an offset (another UTC date) and epoch ms.
      static const char* kDates[] = {"2026-06-30", "2026-07-15T23:30:00-05:00", "1785456000000", ""};
      value = kDates[pick(std::size(kDates))];
    } else {
      value = property + "-" + std::to_string(pick(100));
    }
    const std::int64_t occurred = at(86400, 3 * 86400);
    json::object d{{"object_type", object_type}, {"object_id", object_id}, {"property", property},
                   {"occurred_at", format_rfc3339(Timestamp{(kBaseSeconds + occurred) * 1'000'000})}};
    if (!(value.is_null() && chance(50))) d["value"] = value;  // null, or absent: both "cleared"
    // The relay publishes a little after the change; the rule reads occurred_at.
    cloud(pid, "hubspot.object.changed", occurred + pick(120), std::move(d), "");
    out_.back().key = object_id;
  }

  // An explicit timer: scheduled (sometimes moved by a newer schedule) and
  // sometimes cancelled, the cancel as likely before the schedule as after.
  void followup(const std::string& pid, const std::string& id) {
    static const char* kKinds[] = {"email", "call_reminder", "stale_deal"};
    const char* kind = kKinds[pick(3)];
    for (int n = 1 + pick(2); n > 0; --n) {
      json::object d{{"followup_id", id}, {"prospect_id", pid}, {"kind", kind},
                     {"due_at", format_rfc3339(Timestamp{(kBaseSeconds + at(3 * 86400, 86400)) * 1'000'000})}};
      if (chance(50)) d["template"] = "d-nudge";
      cloud(pid, "crm.followup.scheduled", at(3600, 2 * 86400), std::move(d), id);
    }
    if (chance(40)) {
      json::object d{{"followup_id", id}};
      if (chance(50)) d["prospect_id"] = pid;
      cloud(pid, "crm.followup.cancelled", at(3600, 2 * 86400), std::move(d), id);
    }
  }

  void email(const std::string& pid, const std::string& email) {
    const std::string message_id = "msg" + std::to_string(next_id_++) + "x" + email;
    const std::int64_t sent = at(3600, 86400);
    json::object d{{"email_id", email}, {"prospect_id", pid}, {"provider_message_id", message_id},
                   {"template", "intro-" + std::to_string(pick(3))}, {"subject", "Hello"}};
    if (chance(20)) d["sequence_step"] = 1;
    cloud(pid, "crm.email.sent", sent, std::move(d), email);
    struct Kind {
      const char* type;
      const char* sg;  // nullptr: CloudEvents only
    };
    static constexpr Kind kKinds[] = {
        {"crm.email.delivered", "delivered"}, {"crm.email.opened", "open"},
        {"crm.email.opened", "open"},         {"crm.email.clicked", "click"},
        {"crm.email.replied", nullptr},       {"crm.email.bounced", "bounce"},
        {"crm.email.dropped", "dropped"},     {"crm.email.unsubscribed", "unsubscribe"},
        {"crm.email.spam_reported", "spamreport"}, {"crm.email.processed", "processed"},
        {"crm.email.deferred", "deferred"},
    };
    for (int n = pick(shape_.max_email_events + 1); n > 0; --n) {
      const Kind& k = kKinds[pick(std::size(kKinds))];
      // Mostly after the send, sometimes (clock skew, relays) before it.
      const std::int64_t t = at(sent - 600, 2 * 86400);
      const int channel = k.sg == nullptr ? 0 : pick(3);
      if (channel == 0) {
        json::object data{{"email_id", email}};
        if (chance(70)) data["prospect_id"] = pid;
        if (k.type == std::string("crm.email.replied")) data["reply_text"] = "Sounds good, call me";
        if (k.type == std::string("crm.email.clicked")) data["url"] = "https://example.com/a";
        if (k.type == std::string("crm.email.opened") && chance(30)) data["machine_open"] = true;
        if (k.type == std::string("crm.email.bounced")) data["reason"] = "mailbox full";
        const bool machine = data.contains("machine_open");
        cloud(pid, k.type, t, std::move(data), email);
        out_.back().machine_open = machine;
      } else {
        sendgrid(pid, email, message_id, k.sg, k.type, t, channel == 1,
                 k.sg == std::string("open") && chance(30));
      }
    }
  }

  void sms(const std::string& pid, const std::string& sms) {
    static const char* kStatuses[] = {"queued", "sent", "delivered", "undelivered", "failed"};
    const std::int64_t base = at(3600, 86400);
    for (int n = 1 + pick(3); n > 0; --n) {
      cloud(pid, "crm.sms.status", at(base, 600),
            {{"sms_id", sms}, {"prospect_id", pid}, {"status", kStatuses[pick(5)]}}, sms);
    }
    if (chance(40)) {
      cloud(pid, "crm.sms.replied", at(base, 7200),
            {{"sms_id", sms}, {"prospect_id", pid}, {"body", "Yes, interested"}}, sms);
    }
  }

  void call(const std::string& pid, const std::string& call) {
    const std::int64_t base = at(7200, 2 * 86400);
    for (int n = 1 + pick(2); n > 0; --n) {
      cloud(pid, "crm.call.scheduled", at(base, 3600),
            {{"call_id", call}, {"prospect_id", pid},
             {"scheduled_at", format_rfc3339(Timestamp{(kBaseSeconds + base + 86400 + pick(4) * 3600) * 1'000'000})}},
            call);
    }
    if (chance(60)) {
      static const char* kOutcomes[] = {"proposal_sent", "no_show", "follow_up"};
      json::object d{{"call_id", call}, {"prospect_id", pid},
                     {"completed_at", format_rfc3339(Timestamp{(kBaseSeconds + base + 90000) * 1'000'000})},
                     {"duration_s", pick(3600)}, {"notes", "talked"},
                     {"objections", json::array{"price", "timing"}}, {"next_steps", "send proposal"},
                     {"outcome", kOutcomes[pick(3)]}};
      cloud(pid, "crm.call.completed", at(base + 86400, 7200), std::move(d), call);
    }
  }

  void deal(const std::string& pid, const std::string& deal) {
    static const char* kStages[] = {"qualification", "proposal", "negotiation", "closed_won",
                                    "closed_lost"};
    for (int n = 1 + pick(3); n > 0; --n) {
      json::object d{{"deal_id", deal}, {"stage", kStages[pick(5)]}};
      if (chance(70)) d["prospect_id"] = pid;
      if (chance(60)) d["amount"] = 1000 + pick(9000);
      cloud(pid, "crm.deal.stage_changed", at(86400, 3 * 86400), std::move(d), deal);
    }
  }

  void payments(const std::string& pid) {
    static const char* kPlans[] = {"basic", "pro"};
    for (int n = 1 + pick(2); n > 0; --n) {
      cloud(pid, "crm.payment.completed", at(2 * 86400, 86400),
            {{"payment_id", "pay-" + std::to_string(next_id_++)}, {"prospect_id", pid},
             {"amount", "49.90"}, {"currency", "EUR"}, {"plan", kPlans[pick(2)]}},
            pid);
    }
    if (chance(50)) {
      json::object d{{"prospect_id", pid}};
      if (chance(50)) d["plan"] = kPlans[pick(2)];
      cloud(pid, "crm.subscription.cancelled", at(2 * 86400, 86400), std::move(d), pid);
    }
  }

  std::mt19937 rng_;
  HistoryShape shape_;
  std::vector<HistoryEvent> out_;
  int next_id_ = 0;
};

}  // namespace

std::vector<HistoryEvent> outreach_history(unsigned seed, const HistoryShape& shape) {
  return Generator(seed, shape).run();
}

void seed_web_app_rows(const TestDatabase& db, const HistoryShape& shape) {
  auto conn = db.connect();
  pqxx::work tx(*conn);
  tx.exec0("INSERT INTO companies (id, name, hubspot_company_id, hubspot_sync_status, updated_at)"
           " SELECT 'co' || j, 'Company ' || j, 'hs-co' || j, 'synced', to_timestamp(" +
           std::to_string(kBaseSeconds) + ") FROM generate_series(0, 2) j");
  for (int k = 0; k < shape.prospects; ++k) {
    if (k % 3 == 2) continue;  // "hs-d<k>" stays unknown
    const std::string pid = "p" + std::to_string(k);
    tx.exec_params(
        "INSERT INTO deals (id, company_id, prospect_id, name, stage, amount, close_date,"
        " hubspot_deal_id, hubspot_sync_status, updated_at)"
        " VALUES ($1, $2, $3, $4, 'qualification', $5, '2026-05-31', $6, 'synced',"
        " to_timestamp($7::bigint))",
        pid + "-d0", "co" + std::to_string(k % 3),
        k % 2 == 0 ? pid.c_str() : nullptr, "Deal " + std::to_string(k),
        500 + 10 * k, "hs-d" + std::to_string(k), kBaseSeconds + 2 * 86400 + k * 3600);
  }
  tx.commit();
}

std::vector<HistoryEvent> in_time_order(std::vector<HistoryEvent> events) {
  std::sort(events.begin(), events.end(), [](const HistoryEvent& a, const HistoryEvent& b) {
    return std::tie(a.time_us, a.id) < std::tie(b.time_us, b.id);
  });
  return events;
}

HistoryEvent cloud_event(const std::string& id, const std::string& type, const std::string& time,
                         const std::string& data_json) {
  HistoryEvent e;
  e.topic = "crm.outreach.events";
  e.id = id;
  e.type = type;
  e.value = R"({"specversion":"1.0","id":")" + id + R"(","source":"test","type":")" + type +
            R"(","time":")" + time + R"(","data":)" + data_json + "}";
  std::optional<Timestamp> t = parse_rfc3339(time);
  e.time_us = t ? t->micros_since_epoch : 0;
  return e;
}

WorkItem work_item(const HistoryEvent& e, long long offset) {
  queue::RawMessage m;
  m.origin = {e.topic, 0, offset, -1};
  m.key = e.key;
  m.value = e.value;
  Config config;
  auto items = decode_message(m, config, decode_limits(config));
  return std::move(items.at(0));
}

Status apply_events(db::Database& db, const std::vector<HistoryEvent>& events, size_t batch,
                    const db::ProjectionOptions& options) {
  for (size_t i = 0; i < events.size(); i += batch) {
    std::vector<WorkItem> items;
    for (size_t j = i; j < std::min(events.size(), i + batch); ++j) {
      items.push_back(work_item(events[j], static_cast<long long>(j)));
    }
    std::vector<ItemResult> results;
    if (Status s = apply_batch(db, items, options, &results); !s) return s;
    for (size_t k = 0; k < results.size(); ++k) {
      if (results[k].outcome == Outcome::kDeadLetter) {
        return Status::permanent(results[k].reason, results[k].error + " in " + events[i + k].value);
      }
    }
  }
  return Status::ok();
}

std::string at_hour(int hour, int minute) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "2026-03-%02dT%02d:%02d:00Z", 1 + hour / 24, hour % 24, minute);
  return buf;
}

std::string outreach_tables(const TestDatabase& db) {
  struct Table {
    const char* name;
    const char* volatile_columns;
  };
  static constexpr Table kTables[] = {
      {"prospects", "{created_at,updated_at}"},
      {"email_activities", "{created_at,updated_at}"},
      {"sms_activities", "{created_at,updated_at}"},
      {"call_activities", "{created_at,updated_at}"},
      {"deals", "{created_at,updated_at}"},
      {"customers", "{created_at,updated_at}"},
      {"subscriptions", "{created_at,updated_at}"},
      {"pipeline_stages", "{}"},
      {"followups", "{created_at,updated_at}"},
      {"notifications", "{created_at,updated_at,next_attempt_at}"},
      {"sync_queue", "{id,created_at,updated_at,next_attempt_at}"},
      {"outreach_activities", "{id,created_at}"},
      {"processed_events", "{processed_at,topic,partition,offset}"},
  };
  auto conn = db.connect();
  pqxx::work tx(*conn);
  std::string out;
  for (const Table& t : kTables) {
    out += std::string("== ") + t.name + "\n";
    // The table name is one of the constants above, never input.
    for (const auto& row : tx.exec_params(std::string("SELECT (to_jsonb(x) - $1::text[])::text AS r FROM ") +
                                              t.name + " x ORDER BY r",
                                          t.volatile_columns)) {
      out += row[0].c_str();
      out += '\n';
    }
  }
  return out;
}

}  // namespace crm::test
