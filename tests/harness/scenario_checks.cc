// The checks of the executors' work against the fake APIs' ledgers
// (declared at the end of scenario.h).

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "tests/harness/fake_http.h"
#include "tests/harness/fake_hubspot.h"
#include "tests/harness/scenario.h"

namespace crm::test {
namespace {

namespace json = boost::json;

// The follow-up a SendGrid request is for: its custom_args.followup_id
// (followup_executor.cc's sendgrid_body), "" if the body does not say.
std::string followup_of(const Received& r) {
  boost::system::error_code ec;
  const json::value body = json::parse(r.body, ec);
  if (ec || !body.is_object()) return "";
  const json::value* p = body.as_object().if_contains("personalizations");
  if (p == nullptr || !p->is_array() || p->as_array().empty() || !p->as_array()[0].is_object()) return "";
  const json::value* args = p->as_array()[0].as_object().if_contains("custom_args");
  if (args == nullptr || !args->is_object()) return "";
  const json::value* id = args->as_object().if_contains("followup_id");
  return id != nullptr && id->is_string() ? std::string(id->as_string()) : "";
}

std::optional<std::string> text_or_null(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

}  // namespace

EmailFigures check_emails(const TestDatabase& db, const std::vector<Received>& requests,
                          const std::vector<Received>& accepted) {
  EmailFigures out;
  std::map<std::string, long long> asked, took;
  for (const Received& r : requests) asked[followup_of(r)]++;
  for (const Received& r : accepted) took[followup_of(r)]++;
  out.requests = static_cast<long long>(requests.size());
  out.accepted = static_cast<long long>(accepted.size());

  auto conn = db.connect();
  pqxx::nontransaction tx(*conn);
  std::map<std::string, std::string> status_of;
  // The executor's error of a follow-up out of attempts says "giving up".
  for (const auto& row : tx.exec(
           "SELECT id, status, attempts, due_at <= now(), coalesce(last_error, '') LIKE '%giving up%'"
           " FROM followups WHERE kind = 'email' ORDER BY id")) {
    const std::string id = row[0].c_str();
    const std::string status = row[1].c_str();
    const long long attempts = row[2].as<long long>();
    const bool due = !row[3].is_null() && row[3].as<bool>();
    status_of[id] = status;
    if (due && status != "cancelled") out.due++;
    out.sent += status == "sent";
    out.dead += status == "dead";
    out.exhausted += status == "dead" && row[4].as<bool>();
    out.in_doubt += status == "failed";
    const long long n_took = took.count(id) ? took[id] : 0;
    const long long n_asked = asked.count(id) ? asked[id] : 0;
    EXPECT_LE(n_took, 1) << "follow-up " << id << " (" << status << ") was emailed " << n_took << " times";
    // `sending` and `failed` (in doubt) may or may not have gone out; the
    // other states say it did, or that it did not.
    if (status == "sent") {
      EXPECT_EQ(n_took, 1) << "follow-up " << id << " is sent, but SendGrid accepted " << n_took << " emails for it";
    } else if (status != "sending" && status != "failed") {
      EXPECT_EQ(n_took, 0) << "follow-up " << id << " is " << status << ", but SendGrid accepted an email for it";
    }
    EXPECT_LE(n_asked, attempts) << "follow-up " << id << ": " << n_asked << " SendGrid requests for "
                                 << attempts << " claims";
  }
  for (const auto& [id, n] : asked) {
    EXPECT_TRUE(status_of.count(id)) << n << " SendGrid request(s) for follow-up '" << id
                                     << "', which the table does not have";
  }
  return out;
}

HubspotFigures check_hubspot(const TestDatabase& db, FakeHubspot& hubspot, int limit) {
  struct Kind {
    const char* entity;  // sync_queue.entity_type
    const char* plural;  // the fake's object type
    const char* table;
    const char* id_column;
  };
  static constexpr Kind kKinds[] = {{"company", "companies", "companies", "hubspot_company_id"},
                                    {"contact", "contacts", "contacts", "hubspot_contact_id"},
                                    {"deal", "deals", "deals", "hubspot_deal_id"}};
  HubspotFigures out;
  auto conn = db.connect();
  pqxx::nontransaction tx(*conn);
  for (const Kind& k : kKinds) {
    // Our rows' HubSpot ids and company links. The names are the constants
    // above, never input.
    std::map<std::string, std::optional<std::string>> ours;
    std::map<std::string, std::optional<std::string>> links;
    const bool linked = std::string(k.entity) != "company";
    for (const auto& row : tx.exec(std::string("SELECT id, ") + k.id_column +
                                   (linked ? ", hubspot_company_link" : ", NULL") + " FROM " + k.table)) {
      ours[row[0].c_str()] = text_or_null(row[1]);
      links[row[0].c_str()] = text_or_null(row[2]);
    }
    // The entity's last job says what HubSpot must hold.
    for (const auto& row : tx.exec_params(
             "SELECT entity_id, operation, status FROM ("
             "  SELECT DISTINCT ON (entity_id) entity_id, operation, status FROM sync_queue"
             "  WHERE entity_type = $1 ORDER BY entity_id, id DESC) last WHERE status = 'completed'",
             k.entity)) {
      const std::string id = row[0].c_str();
      const std::string op = row[1].c_str();
      out.synced++;
      const std::optional<HubspotObject> theirs = hubspot.find(k.plural, id);
      if (op == "delete") {
        EXPECT_FALSE(theirs) << k.entity << " " << id << " was deleted, but HubSpot still has it as "
                             << theirs->id;
        continue;
      }
      if (!theirs) {
        ADD_FAILURE() << k.entity << " " << id << " was synced, but HubSpot does not have it";
        continue;
      }
      EXPECT_EQ(ours[id].value_or("(none)"), theirs->id)
          << k.entity << " " << id << ": our HubSpot id differs from HubSpot's";
    }
    // Every live object is the one our row names, and linked where we say.
    for (const HubspotObject& o : hubspot.objects(k.plural)) {
      if (o.archived) continue;
      out.live++;
      // FakeHubspot's id property, and hubspot.id_property's default.
      auto p = o.properties.find("crm_id");
      const std::string id = p == o.properties.end() ? "" : p->second;
      auto row = ours.find(id);
      if (row == ours.end()) {
        ADD_FAILURE() << "HubSpot " << k.plural << " object " << o.id << " (crm_id '" << id << "') has no row";
        continue;
      }
      EXPECT_EQ(row->second.value_or("(none)"), o.id)
          << "HubSpot " << k.plural << " object " << o.id << " is " << k.entity << " " << id
          << ", whose row names another";
      if (linked && links[id]) {
        EXPECT_TRUE(hubspot.associations(k.plural, "companies").count({o.id, *links[id]}))
            << k.entity << " " << id << " is linked to company " << *links[id] << " here, not in HubSpot";
      }
    }
  }
  out.requests = static_cast<long long>(hubspot.http().requests().size());
  out.max_in_interval = hubspot.max_requests_in_any_interval();
  EXPECT_LE(out.max_in_interval, limit) << "requests in one of HubSpot's rolling intervals";
  EXPECT_EQ(hubspot.rate_limit_violations(), 0) << "requests HubSpot's limiter refused (429)";
  return out;
}

SlackFigures check_slack(const TestDatabase& db, const std::vector<Received>& requests,
                         const std::vector<Received>& accepted, long long leave_ms) {
  SlackFigures out;
  out.requests = static_cast<long long>(requests.size());
  out.accepted = static_cast<long long>(accepted.size());
  out.sent = db.count("SELECT count(*) FROM notifications WHERE status = 'sent'");
  // Slack is at least once: a crash between the webhook's answer and its
  // recording sends the message again after the lease. So more accepted
  // than sent is allowed here, fewer never.
  EXPECT_GE(out.accepted, out.sent) << "notifications recorded sent that Slack never accepted";
  std::vector<std::chrono::system_clock::time_point> at;
  for (const Received& r : requests) at.push_back(r.at);
  std::sort(at.begin(), at.end());
  long long violations = 0;
  for (size_t i = 0; i < at.size(); ++i) {
    for (size_t j = i + 1; j < at.size(); ++j) {
      const long long span = std::chrono::duration_cast<std::chrono::milliseconds>(at[j] - at[i]).count();
      if (j == i + 1 && (out.min_gap_ms < 0 || span < out.min_gap_ms)) out.min_gap_ms = span;
      if (span < static_cast<long long>(j - i) * 1000 - leave_ms && ++violations <= 5) {
        ADD_FAILURE() << "Slack requests " << i << " to " << j << " (" << j - i + 1 << " messages) within "
                      << span << " ms";
      }
    }
  }
  return out;
}

int check_bounded_retries(const TestDatabase& db, int max_attempts) {
  const std::string max = std::to_string(max_attempts);
  auto conn = db.connect();
  pqxx::nontransaction tx(*conn);
  // Rows over the maximum, and rows that made every attempt yet would be
  // claimed again.
  const pqxx::result bad = tx.exec_params(
      "SELECT 'followups ' || id || ': ' || status || ' after ' || attempts FROM followups"
      "  WHERE attempts > $1 OR (attempts >= $1 AND status = 'scheduled')"
      " UNION ALL SELECT 'sync_queue ' || id || ': ' || status || ' after ' || attempts FROM sync_queue"
      "  WHERE attempts > $1 OR (attempts >= $1 AND status = 'pending')"
      " UNION ALL SELECT 'notifications ' || id || ': ' || status || ' after ' || attempts FROM notifications"
      "  WHERE attempts > $1 OR (attempts >= $1 AND status IN ('pending', 'failed'))",
      max_attempts);
  for (size_t i = 0; i < bad.size() && i < 5; ++i) {
    ADD_FAILURE() << bad[i][0].c_str() << " attempts (retry.max_attempts = " << max << ")";
  }
  EXPECT_EQ(bad.size(), 0u) << "rows past their attempts";
  return tx.exec("SELECT greatest((SELECT max(attempts) FROM followups), (SELECT max(attempts) FROM sync_queue),"
                 " (SELECT max(attempts) FROM notifications), 0)")[0][0]
      .as<int>();
}

long long check_nothing_stuck(const TestDatabase& db) {
  auto conn = db.connect();
  pqxx::nontransaction tx(*conn);
  const pqxx::result stuck = tx.exec(
      "SELECT 'followups ' || id || ' sending, lease ended ' || (now() - lease_expires_at)::text || ' ago'"
      "  FROM followups WHERE status = 'sending' AND lease_expires_at < now()"
      " UNION ALL SELECT 'sync_queue ' || id || ' in_progress, lease ended ' || (now() - lease_expires_at)::text"
      "  || ' ago' FROM sync_queue WHERE status = 'in_progress' AND lease_expires_at < now()"
      " UNION ALL SELECT 'notifications ' || id || ' sending, lease ended ' || (now() - lease_expires_at)::text"
      "  || ' ago' FROM notifications WHERE status = 'sending' AND lease_expires_at < now()");
  for (size_t i = 0; i < stuck.size() && i < 5; ++i) ADD_FAILURE() << "stuck: " << stuck[i][0].c_str();
  EXPECT_EQ(stuck.size(), 0u) << "rows stuck past their lease";
  return tx.exec("SELECT (SELECT count(*) FROM followups WHERE status = 'sending')"
                 " + (SELECT count(*) FROM sync_queue WHERE status = 'in_progress')"
                 " + (SELECT count(*) FROM notifications WHERE status = 'sending')")[0][0]
      .as<long long>();
}

}  // namespace crm::test
