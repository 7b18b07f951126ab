// The event contracts of handlers/routing.cc, checked through
// Handler::extract (SPEC.md §4): what a valid event becomes, and the reason
// every kind of violation is dead-lettered with. The expected contracts are
// written out here from SPEC.md, not read from the routing table, so a
// change to the table that breaks the contract fails a test.
//
// ReadmeExamples decodes every example event of README.md and runs it
// through its handler, so the documented contract cannot fall behind the
// code.

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "daemon/config.h"
#include "daemon/consume_loop.h"
#include "daemon/core/time.h"
#include "handlers/handler.h"
#include "handlers/hubspot.h"
#include "handlers/routing.h"
#include "queue/decode.h"

namespace crm::handlers {
namespace {

namespace json = boost::json;

// One event type's contract as SPEC.md states it.
struct Contract {
  std::string type;
  EntityType entity = EntityType::kNone;
  // What the minimal event below extracts to.
  std::optional<std::string> entity_id;
  std::optional<std::string> prospect_id;
  // The required fields, with valid values, and nothing else.
  json::object minimal;
  // Every optional field, with valid values.
  json::object optional;
};

json::object merged(json::object a, const json::object& b) {
  for (const auto& [k, v] : b) a[k] = v;
  return a;
}

// The email types SendGrid produces: prospect_id optional, and the email may
// be named by the message id alone.
const char* const kSendgridEmailTypes[] = {
    "crm.email.processed", "crm.email.deferred",     "crm.email.delivered",
    "crm.email.opened",    "crm.email.clicked",      "crm.email.replied",
    "crm.email.bounced",   "crm.email.dropped",      "crm.email.unsubscribed",
    "crm.email.spam_reported", "crm.email.resubscribed",
};

const std::vector<Contract>& contracts() {
  static const std::vector<Contract> kContracts = [] {
    std::vector<Contract> c;
    c.push_back({"crm.prospect.discovered", EntityType::kNone, std::nullopt, "p-1",
                 {{"prospect_id", "p-1"}, {"name", "Ada Lovelace"}},
                 {{"email", "ada@example.com"},
                  {"phone", "+44 20 7946 0000"},
                  {"company", "Analytical Engines Ltd"},
                  {"time_zone", "Europe/London"},
                  {"source", "conference"},
                  {"category", "manufacturing"},
                  {"urgency", "high"}}});
    c.push_back({"crm.email.sent", EntityType::kEmail, "e-1", "p-1",
                 {{"email_id", "e-1"}, {"prospect_id", "p-1"}},
                 {{"provider_message_id", "msg-1"},
                  {"template", "intro"},
                  {"subject", "Hello"},
                  {"sequence_step", 1}}});
    for (const char* type : kSendgridEmailTypes) {
      json::object optional{{"prospect_id", "p-1"}, {"provider_message_id", "msg-1.filter0"}};
      const std::string_view t = type;
      if (t == "crm.email.opened") optional["machine_open"] = true;
      if (t == "crm.email.clicked") optional["url"] = "https://example.com/pricing";
      if (t == "crm.email.replied") optional["reply_text"] = "Sounds good";
      if (t == "crm.email.bounced" || t == "crm.email.dropped") optional["reason"] = "550 5.1.1";
      c.push_back({type, EntityType::kEmail, "e-1", std::nullopt, {{"email_id", "e-1"}},
                   std::move(optional)});
    }
    c.push_back({"crm.sms.status", EntityType::kSms, "s-1", "p-1",
                 {{"sms_id", "s-1"}, {"prospect_id", "p-1"}, {"status", "delivered"}},
                 {}});
    c.push_back({"crm.sms.replied", EntityType::kSms, "s-1", "p-1",
                 {{"sms_id", "s-1"}, {"prospect_id", "p-1"}, {"body", "Call me tomorrow"}},
                 {}});
    c.push_back({"crm.call.scheduled", EntityType::kCall, "c-1", "p-1",
                 {{"call_id", "c-1"}, {"prospect_id", "p-1"}, {"scheduled_at", "2026-03-02T15:00:00Z"}},
                 {}});
    c.push_back({"crm.call.completed", EntityType::kCall, "c-1", "p-1",
                 {{"call_id", "c-1"}, {"prospect_id", "p-1"}, {"completed_at", "2026-03-02T15:30:00Z"}},
                 {{"duration_s", 1800},
                  {"notes", "Wants a demo"},
                  {"objections", json::array{"price", "timing"}},
                  {"next_steps", "Send proposal"},
                  {"outcome", "proposal_sent"}}});
    c.push_back({"crm.deal.stage_changed", EntityType::kDeal, "d-1", std::nullopt,
                 {{"deal_id", "d-1"}, {"stage", "negotiation"}},
                 {{"prospect_id", "p-1"}, {"amount", 1200}}});
    c.push_back({"crm.payment.completed", EntityType::kCustomer, "p-1", "p-1",
                 {{"payment_id", "pay-1"}, {"prospect_id", "p-1"}, {"amount", "49.00"}, {"currency", "EUR"}},
                 {{"plan", "pro"}}});
    c.push_back({"crm.subscription.cancelled", EntityType::kCustomer, "p-1", "p-1",
                 {{"prospect_id", "p-1"}},
                 {{"plan", "pro"}}});
    c.push_back({"crm.followup.scheduled", EntityType::kFollowup, "f-1", "p-1",
                 {{"followup_id", "f-1"}, {"prospect_id", "p-1"}, {"kind", "email"},
                  {"due_at", "2026-03-05T09:00:00Z"}},
                 {{"template", "d-123"}}});
    c.push_back({"crm.sync.requested", EntityType::kNone, std::nullopt, std::nullopt,
                 {{"entity_type", "company"}, {"entity_id", "c-1"}, {"operation", "upsert"}},
                 {}});
    c.push_back({"crm.followup.cancelled", EntityType::kFollowup, "f-1", std::nullopt,
                 {{"followup_id", "f-1"}},
                 {{"prospect_id", "p-1"}, {"reason", "booked a call"}}});
    // No prospect; the entity is HubSpot's object. `value` absent or null:
    // the property was cleared.
    c.push_back({"hubspot.object.changed", EntityType::kHubspot, "deal:9071", std::nullopt,
                 {{"object_type", "deal"}, {"object_id", "9071"}, {"property", "dealname"},
                  {"occurred_at", "2026-03-01T09:30:00Z"}},
                 {{"value", "Big renewal"}}});
    return c;
  }();
  return kContracts;
}

const Contract& contract(std::string_view type) {
  for (const Contract& c : contracts()) {
    if (c.type == type) return c;
  }
  throw std::logic_error("no contract for " + std::string(type));
}

Event make_event(std::string_view type, json::object data) {
  Event e;
  e.id = "evt-1";
  e.source = "/crm/test";
  e.type = std::string(type);
  e.time = *parse_rfc3339("2026-03-01T10:00:00Z");
  e.data = std::move(data);
  return e;
}

Result<Fact> extract(std::string_view type, json::object data) {
  const Handler* h = find_handler(type);
  if (h == nullptr) return Status::permanent("no_handler", std::string(type));
  return h->extract(make_event(type, std::move(data)));
}

// "ok" or the reason, so a failed expectation shows what came out.
std::string reason(const Result<Fact>& r) { return r ? "ok" : r.status().reason(); }

// A value of the wrong JSON type for a field.
json::value wrong_type_for(std::string_view field) {
  if (field == "sequence_step" || field == "duration_s") return "60";
  if (field == "amount") return true;
  if (field == "machine_open") return "true";
  if (field == "objections") return "price";
  return 42;
}

bool is_time_field(std::string_view f) {
  return f == "scheduled_at" || f == "completed_at" || f == "due_at" || f == "occurred_at";
}

TEST(HandlerContract, EveryRoutedTypeHasAHandlerAndAContract) {
  std::set<std::string> routed;
  for (std::string_view type : routed_types()) {
    EXPECT_TRUE(routed.insert(std::string(type)).second) << "routed twice: " << type;
    const Handler* h = find_handler(type);
    ASSERT_NE(h, nullptr) << type;
    EXPECT_EQ(h->type, type);
  }
  std::set<std::string> specified;
  for (const Contract& c : contracts()) specified.insert(c.type);
  EXPECT_EQ(routed, specified);
}

TEST(HandlerContract, UnknownTypesHaveNoHandler) {
  for (std::string_view type : {"", "crm", "crm.email", "crm.email.sent.v2", "CRM.EMAIL.SENT",
                                "crm.email.sent ", " crm.email.sent", "crm.email.bounce",
                                "crm.prospect.deleted"}) {
    EXPECT_EQ(find_handler(type), nullptr) << "\"" << type << "\"";
  }
}

TEST(HandlerContract, MinimalEventExtracts) {
  for (const Contract& c : contracts()) {
    SCOPED_TRACE(c.type);
    Result<Fact> fact = extract(c.type, c.minimal);
    ASSERT_EQ(reason(fact), "ok") << (fact ? "" : fact.status().message());
    EXPECT_EQ(fact->entity_type, c.entity);
    EXPECT_EQ(fact->entity_id, c.entity_id);
    EXPECT_EQ(fact->prospect_id, c.prospect_id);
    EXPECT_FALSE(fact->provider_message_id.has_value());
    EXPECT_EQ(fact->details.size(), c.minimal.size());
    for (const auto& [k, v] : c.minimal) {
      ASSERT_TRUE(fact->details.contains(k)) << k;
      if (!is_time_field(k)) {
        EXPECT_EQ(fact->details.at(k), v) << k;
      }
    }
  }
}

TEST(HandlerContract, EveryOptionalFieldIsAccepted) {
  for (const Contract& c : contracts()) {
    SCOPED_TRACE(c.type);
    Result<Fact> fact = extract(c.type, merged(c.minimal, c.optional));
    ASSERT_EQ(reason(fact), "ok") << (fact ? "" : fact.status().message());
    for (const auto& [k, v] : c.optional) {
      ASSERT_TRUE(fact->details.contains(k)) << k;
      EXPECT_EQ(fact->details.at(k), v) << k;
    }
    if (c.optional.contains("prospect_id")) {
      EXPECT_EQ(fact->prospect_id, "p-1");
    }
  }
}

TEST(HandlerContract, EachRequiredFieldMissingIsMissingField) {
  for (const Contract& c : contracts()) {
    for (const auto& [field, value] : c.minimal) {
      SCOPED_TRACE(c.type + " without " + std::string(field));
      json::object data = merged(c.minimal, c.optional);
      // A message id may stand in for the email id (SendGrid); not here.
      if (field == "email_id") data.erase("provider_message_id");
      const json::object without_message_id = data;
      data.erase(field);
      Result<Fact> absent = extract(c.type, data);
      ASSERT_EQ(reason(absent), "missing_field");
      EXPECT_TRUE(absent.status().is_permanent());
      EXPECT_NE(absent.status().message().find("data." + std::string(field)), std::string::npos)
          << absent.status().message();

      data = without_message_id;
      data[field] = nullptr;
      EXPECT_EQ(reason(extract(c.type, data)), "missing_field") << "null";
    }
  }
}

TEST(HandlerContract, RequiredStringsMustNotBeEmpty) {
  for (const Contract& c : contracts()) {
    for (const auto& [field, value] : c.minimal) {
      // Reply bodies may be empty; amounts and times have their own reasons.
      if (field == "body" || field == "amount" || is_time_field(field)) continue;
      SCOPED_TRACE(c.type + " with empty " + std::string(field));
      json::object data = c.minimal;
      data[field] = "";
      EXPECT_EQ(reason(extract(c.type, data)), "missing_field");
    }
  }
}

TEST(HandlerContract, SmsReplyBodyMayBeEmpty) {
  Result<Fact> fact = extract("crm.sms.replied", {{"sms_id", "s-1"}, {"prospect_id", "p-1"}, {"body", ""}});
  ASSERT_EQ(reason(fact), "ok");
  EXPECT_EQ(fact->details.at("body"), "");
}

TEST(HandlerContract, WrongJsonTypeIsWrongType) {
  for (const Contract& c : contracts()) {
    const json::object full = merged(c.minimal, c.optional);
    for (const auto& [field, value] : full) {
      SCOPED_TRACE(c.type + " with wrong type for " + std::string(field));
      json::object data = full;
      data[field] = wrong_type_for(field);
      Result<Fact> fact = extract(c.type, data);
      ASSERT_EQ(reason(fact), "wrong_type");
      EXPECT_TRUE(fact.status().is_permanent());
      EXPECT_NE(fact.status().message().find("data." + std::string(field)), std::string::npos)
          << fact.status().message();
    }
  }
}

TEST(HandlerContract, SmsStatusMustBeATwilioStatus) {
  json::object data = contract("crm.sms.status").minimal;
  for (const char* status : {"queued", "sent", "delivered", "undelivered", "failed"}) {
    data["status"] = status;
    Result<Fact> fact = extract("crm.sms.status", data);
    ASSERT_EQ(reason(fact), "ok") << status;
    EXPECT_EQ(fact->details.at("status"), status);
  }
  for (const char* status : {"read", "DELIVERED", "delivered ", "receiving", "accepted"}) {
    data["status"] = status;
    Result<Fact> fact = extract("crm.sms.status", data);
    ASSERT_EQ(reason(fact), "bad_value") << status;
    EXPECT_NE(fact.status().message().find("data.status"), std::string::npos);
  }
}

TEST(HandlerContract, TimesAreNormalizedToUtc) {
  // format_rfc3339 always writes microseconds and Z.
  ASSERT_EQ(format_rfc3339(*parse_rfc3339("2026-03-01T08:00:00Z")), "2026-03-01T08:00:00.000000Z");
  const std::pair<const char*, const char*> cases[] = {
      {"2026-03-01T10:00:00+02:00", "2026-03-01T08:00:00.000000Z"},
      {"2026-03-01T10:00:00Z", "2026-03-01T10:00:00.000000Z"},
      {"2026-03-01T10:00:00.5-01:30", "2026-03-01T11:30:00.500000Z"},
      {"2026-03-01T00:30:00+01:00", "2026-02-28T23:30:00.000000Z"},
  };
  for (const char* type : {"crm.call.scheduled", "crm.call.completed"}) {
    const std::string field = std::string_view(type) == "crm.call.scheduled" ? "scheduled_at" : "completed_at";
    for (const auto& [in, out] : cases) {
      json::object data = contract(type).minimal;
      data[field] = in;
      Result<Fact> fact = extract(type, data);
      ASSERT_EQ(reason(fact), "ok") << type << " " << in;
      EXPECT_EQ(fact->details.at(field), out) << type << " " << in;
    }
  }
}

TEST(HandlerContract, UnparsableTimeIsBadTime) {
  for (const char* type : {"crm.call.scheduled", "crm.call.completed"}) {
    const std::string field = std::string_view(type) == "crm.call.scheduled" ? "scheduled_at" : "completed_at";
    for (const char* bad : {"tomorrow", "", "2026-03-01T10:00:00", "2026-02-30T10:00:00Z",
                            "2026-03-01T25:00:00Z", "1772359200", "2026-03-01"}) {
      json::object data = contract(type).minimal;
      data[field] = bad;
      Result<Fact> fact = extract(type, data);
      ASSERT_EQ(reason(fact), "bad_time") << type << " \"" << bad << "\"";
      EXPECT_NE(fact.status().message().find("data." + field), std::string::npos);
    }
  }
}

TEST(HandlerContract, AmountsAreNumbersOrDecimalStrings) {
  const json::value good[] = {json::value(12.5), json::value(1200), json::value(0),
                              json::value(999999999999999), json::value("12.50"),
                              json::value("0.99"), json::value("1200"),
                              json::value("999999999999999.99")};
  for (const char* type : {"crm.deal.stage_changed", "crm.payment.completed"}) {
    for (const json::value& amount : good) {
      json::object data = contract(type).minimal;
      data["amount"] = amount;
      Result<Fact> fact = extract(type, data);
      ASSERT_EQ(reason(fact), "ok") << type << " " << json::serialize(amount);
      // Kept as it came: a decimal string stays a string, exact.
      EXPECT_EQ(fact->details.at("amount"), amount) << type;
    }
  }
}

TEST(HandlerContract, AmountsRejectExponentsGarbageAndHugeValues) {
  const json::value bad[] = {json::value("1e5"), json::value("abc"), json::value(""),
                             json::value("12."), json::value(".5"), json::value("1,5"),
                             json::value(" 12"), json::value("+12"), json::value("0x10"),
                             json::value("NaN"), json::value(1e16), json::value(1e15),
                             json::value(-1e16), json::value("1234567890123456"),
                             json::value("10000000000000000.5")};
  for (const char* type : {"crm.deal.stage_changed", "crm.payment.completed"}) {
    for (const json::value& amount : bad) {
      json::object data = contract(type).minimal;
      data["amount"] = amount;
      Result<Fact> fact = extract(type, data);
      ASSERT_EQ(reason(fact), "bad_value") << type << " " << json::serialize(amount);
      EXPECT_NE(fact.status().message().find("data.amount"), std::string::npos);
    }
  }
}

TEST(HandlerContract, CountsAreIntegersFromZeroToABillion) {
  const struct {
    const char* type;
    const char* field;
  } counts[] = {{"crm.call.completed", "duration_s"}, {"crm.email.sent", "sequence_step"}};
  for (const auto& [type, field] : counts) {
    SCOPED_TRACE(std::string(type) + " " + field);
    for (const json::value& ok : {json::value(0), json::value(1800), json::value(1000000000)}) {
      json::object data = contract(type).minimal;
      data[field] = ok;
      Result<Fact> fact = extract(type, data);
      ASSERT_EQ(reason(fact), "ok") << json::serialize(ok);
      EXPECT_EQ(fact->details.at(field), ok);
    }
    for (const json::value& bad : {json::value(-1), json::value(-1800), json::value(1000000001),
                                   json::value(18446744073709551615ULL)}) {
      json::object data = contract(type).minimal;
      data[field] = bad;
      EXPECT_EQ(reason(extract(type, data)), "bad_value") << json::serialize(bad);
    }
    for (const json::value& bad : {json::value(12.5), json::value(1800.0), json::value("1800"),
                                   json::value(true)}) {
      json::object data = contract(type).minimal;
      data[field] = bad;
      EXPECT_EQ(reason(extract(type, data)), "wrong_type") << json::serialize(bad);
    }
  }
}

TEST(HandlerContract, ObjectionsAreAnArrayOfStrings) {
  const json::object base = contract("crm.call.completed").minimal;
  for (const json::value& ok : {json::value(json::array{}), json::value(json::array{"price"}),
                                json::value(json::array{"price", "timing", ""})}) {
    json::object data = base;
    data["objections"] = ok;
    Result<Fact> fact = extract("crm.call.completed", data);
    ASSERT_EQ(reason(fact), "ok") << json::serialize(ok);
    EXPECT_EQ(fact->details.at("objections"), ok);
  }
  for (const json::value& bad :
       {json::value("price"), json::value(json::array{"price", 3}), json::value(json::array{nullptr}),
        json::value(json::array{json::array{"price"}}), json::value(json::object{{"a", "price"}}),
        json::value(true)}) {
    json::object data = base;
    data["objections"] = bad;
    EXPECT_EQ(reason(extract("crm.call.completed", data)), "wrong_type") << json::serialize(bad);
  }
}

TEST(HandlerContract, EmailEventsOtherThanSentMayOmitProspect) {
  for (const char* type : kSendgridEmailTypes) {
    Result<Fact> without = extract(type, {{"email_id", "e-1"}});
    ASSERT_EQ(reason(without), "ok") << type;
    EXPECT_FALSE(without->prospect_id.has_value()) << type;

    Result<Fact> with = extract(type, {{"email_id", "e-1"}, {"prospect_id", "p-9"}});
    ASSERT_EQ(reason(with), "ok") << type;
    EXPECT_EQ(with->prospect_id, "p-9") << type;

    // Present but empty is not "absent".
    EXPECT_EQ(reason(extract(type, {{"email_id", "e-1"}, {"prospect_id", ""}})), "missing_field")
        << type;
  }
}

TEST(HandlerContract, EmailSentRequiresProspect) {
  EXPECT_EQ(reason(extract("crm.email.sent", {{"email_id", "e-1"}})), "missing_field");
  EXPECT_EQ(reason(extract("crm.email.sent", {{"email_id", "e-1"}, {"prospect_id", nullptr}})),
            "missing_field");
  EXPECT_EQ(reason(extract("crm.email.sent", {{"email_id", "e-1"}, {"prospect_id", ""}})),
            "missing_field");
  Result<Fact> fact = extract("crm.email.sent", {{"email_id", "e-1"}, {"prospect_id", "p-1"}});
  ASSERT_EQ(reason(fact), "ok");
  EXPECT_EQ(fact->prospect_id, "p-1");
}

TEST(HandlerContract, SendgridMessageIdAloneNamesTheEmail) {
  for (const char* type : kSendgridEmailTypes) {
    SCOPED_TRACE(type);
    Result<Fact> fact = extract(type, {{"provider_message_id", "abc.filter1"}});
    ASSERT_EQ(reason(fact), "ok") << (fact ? "" : fact.status().message());
    EXPECT_EQ(fact->entity_type, EntityType::kEmail);
    EXPECT_FALSE(fact->entity_id.has_value());
    EXPECT_FALSE(fact->prospect_id.has_value());
    EXPECT_EQ(fact->provider_message_id, "abc");

    Result<Fact> neither = extract(type, {{"prospect_id", "p-1"}});
    ASSERT_EQ(reason(neither), "missing_field");
    EXPECT_NE(neither.status().message().find("data.email_id"), std::string::npos);

    // A message id with nothing before the first dot names nothing.
    EXPECT_EQ(reason(extract(type, {{"provider_message_id", ".filter1"}})), "missing_field");
    EXPECT_EQ(reason(extract(type, {{"provider_message_id", ""}})), "missing_field");
    EXPECT_EQ(reason(extract(type, {{"email_id", ""}, {"provider_message_id", "abc.f"}})), "ok");
  }
}

// The send itself must say which email it is: a message id alone could
// never be linked to anything.
TEST(HandlerContract, EmailSentNeedsItsEmailIdEvenWithAMessageId) {
  EXPECT_EQ(reason(extract("crm.email.sent", {{"prospect_id", "p-1"}, {"provider_message_id", "abc"}})),
            "missing_field");
}

// Only email events carry SendGrid's message id; elsewhere it is just data.
TEST(HandlerContract, ProviderMessageIdMeansNothingOutsideEmail) {
  Result<Fact> fact = extract("crm.sms.status", {{"sms_id", "s-1"}, {"prospect_id", "p-1"},
                                                 {"status", "sent"}, {"provider_message_id", 5}});
  ASSERT_EQ(reason(fact), "ok");
  EXPECT_FALSE(fact->provider_message_id.has_value());
}

TEST(HandlerContract, ProviderMessageIdIsCutAtTheFirstDot) {
  const std::pair<const char*, const char*> cases[] = {
      {"abc.filter1", "abc"},
      {"14c5d75ce93.filter0001.16648.5515E0B88.0", "14c5d75ce93"},
      {"abc", "abc"},
  };
  for (const char* type : {"crm.email.sent", "crm.email.delivered", "crm.email.opened"}) {
    for (const auto& [in, out] : cases) {
      Result<Fact> fact =
          extract(type, {{"email_id", "e-1"}, {"prospect_id", "p-1"}, {"provider_message_id", in}});
      ASSERT_EQ(reason(fact), "ok") << type << " " << in;
      EXPECT_EQ(fact->entity_id, "e-1");
      EXPECT_EQ(fact->provider_message_id, out) << type << " " << in;
    }
  }
}

TEST(HandlerContract, FieldsOutsideTheContractAreKept) {
  const json::object extra{{"campaign", json::object{{"utm_source", "newsletter"}, {"n", 3}}},
                           {"tags", json::array{1, "two", nullptr}},
                           {"flag", false},
                           {"nothing", nullptr}};
  for (const Contract& c : contracts()) {
    SCOPED_TRACE(c.type);
    Result<Fact> fact = extract(c.type, merged(merged(c.minimal, c.optional), extra));
    ASSERT_EQ(reason(fact), "ok") << (fact ? "" : fact.status().message());
    for (const auto& [k, v] : extra) {
      ASSERT_TRUE(fact->details.contains(k)) << k;
      EXPECT_EQ(fact->details.at(k), v) << k;
    }
  }
}

TEST(HandlerContract, NullOptionalFieldCountsAsAbsent) {
  for (const Contract& c : contracts()) {
    for (const auto& [field, value] : c.optional) {
      SCOPED_TRACE(c.type + " with null " + std::string(field));
      json::object data = merged(c.minimal, c.optional);
      data[field] = nullptr;
      Result<Fact> fact = extract(c.type, data);
      ASSERT_EQ(reason(fact), "ok") << (fact ? "" : fact.status().message());
      if (field == "prospect_id") {
        EXPECT_FALSE(fact->prospect_id.has_value());
      } else if (field == "provider_message_id") {
        EXPECT_FALSE(fact->provider_message_id.has_value());
      } else {
        // A contract field that is null is dropped, so the projections can
        // tell "stated" by presence alone.
        EXPECT_FALSE(fact->details.contains(field));
      }
    }
  }
  // A null amount does not erase a deal's amount: it is not stated.
  Result<Fact> deal = extract("crm.deal.stage_changed", {{"deal_id", "d-1"}, {"stage", "won"}, {"amount", nullptr}});
  ASSERT_EQ(reason(deal), "ok");
  EXPECT_FALSE(deal->details.contains("amount"));
}

// --- hubspot.object.changed ------------------------------------------------

json::object hubspot_change(const char* object_type, const char* property, json::value value) {
  json::object d{{"object_type", object_type}, {"object_id", "9071"}, {"property", property},
                 {"occurred_at", "2026-03-01T10:30:00+01:00"}};
  if (!value.is_null()) d["value"] = std::move(value);
  return d;
}

TEST(HubspotChange, NamesHubspotsObjectAndNoProspect) {
  for (const char* type : {"company", "contact", "deal"}) {
    json::object data = hubspot_change(type, "name", "Acme");
    data["prospect_id"] = "p-1";  // not part of the contract: kept as data, names nothing
    Result<Fact> fact = extract("hubspot.object.changed", data);
    ASSERT_EQ(reason(fact), "ok") << type;
    EXPECT_EQ(fact->entity_type, EntityType::kHubspot);
    EXPECT_EQ(fact->entity_id, std::string(type) + ":9071");
    EXPECT_FALSE(fact->prospect_id.has_value());
    EXPECT_EQ(fact->details.at("prospect_id"), "p-1");
    EXPECT_EQ(fact->details.at("occurred_at"), "2026-03-01T09:30:00.000000Z");
  }
  EXPECT_EQ(to_string(EntityType::kHubspot), std::string("hubspot"));
}

TEST(HubspotChange, ObjectTypeIsCompanyContactOrDeal) {
  for (const char* type : {"line_item", "Deal", "deals", "ticket"}) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change(type, "name", "x"));
    ASSERT_EQ(reason(fact), "bad_value") << type;
    EXPECT_NE(fact.status().message().find("data.object_type"), std::string::npos);
  }
}

TEST(HubspotChange, AClearedValueIsEmptyNullOrAbsent) {
  for (const char* property : {"dealstage", "amount", "closedate", "dealname"}) {
    SCOPED_TRACE(property);
    Result<Fact> empty = extract("hubspot.object.changed", hubspot_change("deal", property, ""));
    ASSERT_EQ(reason(empty), "ok");
    EXPECT_EQ(empty->details.at("value"), "");
    json::object data = hubspot_change("deal", property, nullptr);
    EXPECT_EQ(reason(extract("hubspot.object.changed", data)), "ok") << "absent";
    data["value"] = nullptr;
    Result<Fact> null = extract("hubspot.object.changed", data);
    ASSERT_EQ(reason(null), "ok") << "null";
    EXPECT_FALSE(null->details.contains("value"));
  }
}

TEST(HubspotChange, DealAmountMustBeADecimalNumber) {
  for (const char* ok : {"1500", "1500.50", "0.99", "-20", "999999999999999.99"}) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change("deal", "amount", ok));
    ASSERT_EQ(reason(fact), "ok") << ok;
    EXPECT_EQ(fact->details.at("value"), ok);  // kept exact, as a string
  }
  for (const char* bad : {"lots", "1,500", "1e5", "$1500", " 1500", "12.", "1234567890123456"}) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change("deal", "amount", bad));
    ASSERT_EQ(reason(fact), "bad_value") << bad;
    EXPECT_TRUE(fact.status().is_permanent());
    EXPECT_NE(fact.status().message().find("data.value"), std::string::npos) << fact.status().message();
    EXPECT_NE(fact.status().message().find("amount"), std::string::npos) << fact.status().message();
  }
  // Only a deal's amount is ours to read: elsewhere it is any text.
  EXPECT_EQ(reason(extract("hubspot.object.changed", hubspot_change("company", "amount", "lots"))), "ok");
  EXPECT_EQ(reason(extract("hubspot.object.changed", hubspot_change("deal", "hs_amount", "lots"))), "ok");
}

TEST(HubspotChange, ValueIsAString) {
  for (json::value bad : {json::value(1500), json::value(true), json::value(json::array{"x"})}) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change("deal", "amount", bad));
    ASSERT_EQ(reason(fact), "wrong_type") << json::serialize(bad);
    EXPECT_NE(fact.status().message().find("data.value"), std::string::npos);
  }
}

TEST(HubspotChange, DealCloseDateBecomesItsUtcDate) {
  const std::pair<const char*, const char*> cases[] = {
      {"2026-06-30", "2026-06-30"},
      {"2026-06-30T00:00:00Z", "2026-06-30"},
      {"2026-06-30T00:00:00.000Z", "2026-06-30"},
      {"2026-06-30T23:30:00-05:00", "2026-07-01"},
      {"2026-07-01T01:00:00+02:00", "2026-06-30"},
      {"1782777600000", "2026-06-30"},  // epoch milliseconds, HubSpot's webhook form
      {"1782863999999", "2026-06-30"},
      {"0", "1970-01-01"},
  };
  for (const auto& [in, out] : cases) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change("deal", "closedate", in));
    ASSERT_EQ(reason(fact), "ok") << in;
    EXPECT_EQ(fact->details.at("value"), out) << in;
    EXPECT_EQ(hubspot_date(in), out) << in;
  }
  for (const char* bad : {"tomorrow", "2026-02-30", "2026-06-30T10:00:00", "30/06/2026", "2026-6-30",
                          "99999999999999999999", "1782777600000.5", "-", "2026-06-30 "}) {
    Result<Fact> fact = extract("hubspot.object.changed", hubspot_change("deal", "closedate", bad));
    ASSERT_EQ(reason(fact), "bad_value") << bad;
    EXPECT_NE(fact.status().message().find("data.value"), std::string::npos);
    EXPECT_FALSE(hubspot_date(bad).has_value()) << bad;
  }
  // A contact's closedate is not ours to read.
  EXPECT_EQ(reason(extract("hubspot.object.changed", hubspot_change("contact", "closedate", "soon"))), "ok");
}

TEST(HubspotChange, OccurredAtIsAnRfc3339Time) {
  for (const char* bad : {"", "yesterday", "1772359200", "2026-03-01"}) {
    json::object data = hubspot_change("deal", "dealstage", "closedwon");
    data["occurred_at"] = bad;
    Result<Fact> fact = extract("hubspot.object.changed", data);
    ASSERT_EQ(reason(fact), "bad_time") << bad;
    EXPECT_NE(fact.status().message().find("data.occurred_at"), std::string::npos);
  }
}

// --- README.md examples ---------------------------------------------------

std::filesystem::path source_dir() {
#ifdef CRM_SOURCE_DIR
  return std::filesystem::path(CRM_SOURCE_DIR);
#else
  // This file is <root>/tests/unit/handlers_test.cc.
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
#endif
}

struct Example {
  std::string info;  // "json event" or "json sendgrid"
  int line = 0;      // of the opening fence, 1-based
  std::string text;
};

std::string trim_right(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
  return s;
}

// Every fenced block whose info string is "json event" or "json sendgrid".
std::vector<Example> readme_examples(const std::string& readme) {
  std::vector<Example> out;
  std::istringstream in(readme);
  std::string line;
  std::optional<Example> open;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim_right(line);
    if (open) {
      if (line == "```") {
        out.push_back(std::move(*open));
        open.reset();
      } else {
        open->text += line + "\n";
      }
    } else if (line == "```json event" || line == "```json sendgrid") {
      open = Example{line.substr(3), n, ""};
    }
  }
  EXPECT_FALSE(open.has_value()) << "README.md: unclosed block at line " << (open ? open->line : 0);
  return out;
}

struct DecodedExamples {
  int event_blocks = 0;
  int sendgrid_blocks = 0;
  std::set<std::string> types;
  std::vector<std::pair<Event, Fact>> sendgrid_facts;
};

// Decodes every example the way the consume loop does and extracts it;
// records a test failure for any that does not pass.
DecodedExamples decode_readme() {
  DecodedExamples result;
  const std::filesystem::path path = source_dir() / "README.md";
  std::ifstream file(path);
  EXPECT_TRUE(file.good()) << "cannot read " << path;
  std::stringstream buffer;
  buffer << file.rdbuf();

  const Config config{};
  const queue::DecodeLimits limits = decode_limits(config);
  const std::vector<Example> examples = readme_examples(buffer.str());
  for (size_t i = 0; i < examples.size(); ++i) {
    const Example& ex = examples[i];
    const bool sendgrid = ex.info == "json sendgrid";
    (sendgrid ? result.sendgrid_blocks : result.event_blocks)++;
    SCOPED_TRACE("README.md:" + std::to_string(ex.line) + " (" + ex.info + ")");

    queue::RawMessage msg;
    msg.origin.topic = sendgrid ? "sendgrid.events" : "crm.outreach.events";
    msg.origin.partition = 0;
    msg.origin.offset = static_cast<std::int64_t>(i);
    msg.value = ex.text;
    const std::vector<WorkItem> items = decode_message(msg, config, limits);
    if (sendgrid) {
      EXPECT_GE(items.size(), 1u);
    } else {
      EXPECT_EQ(items.size(), 1u);
    }
    for (const WorkItem& w : items) {
      const queue::DecodedItem& item = w.item;
      EXPECT_TRUE(item.error.is_ok()) << item.error.reason() << ": " << item.error.message();
      if (!item.event) continue;
      const Event& ev = *item.event;
      const Handler* h = find_handler(ev.type);
      EXPECT_NE(h, nullptr) << "no handler for " << ev.type;
      if (h == nullptr) continue;
      Result<Fact> fact = h->extract(ev);
      EXPECT_TRUE(fact.is_ok()) << ev.type << ": " << fact.status().reason() << ": "
                                << fact.status().message();
      if (!fact) continue;
      result.types.insert(ev.type);
      if (sendgrid) result.sendgrid_facts.emplace_back(ev, *fact);
    }
  }
  return result;
}

TEST(ReadmeExamples, EveryExampleDecodesAndPassesItsHandler) {
  const DecodedExamples ex = decode_readme();
  EXPECT_GT(ex.event_blocks, 0);
  EXPECT_GT(ex.sendgrid_blocks, 0);
  EXPECT_FALSE(ex.types.empty());
}

TEST(ReadmeExamples, EveryRoutedTypeHasAnExample) {
  const DecodedExamples ex = decode_readme();
  for (std::string_view type : routed_types()) {
    EXPECT_TRUE(ex.types.count(std::string(type)) == 1) << "README.md has no example of " << type;
  }
}

TEST(ReadmeExamples, SendgridExampleShowsBothWaysOfNamingTheEmail) {
  const DecodedExamples ex = decode_readme();
  bool by_custom_args = false;
  bool by_message_id_only = false;
  for (const auto& [event, fact] : ex.sendgrid_facts) {
    EXPECT_EQ(event.source, "sendgrid");
    if (fact.entity_id && fact.prospect_id) by_custom_args = true;
    if (!fact.entity_id && !fact.prospect_id && fact.provider_message_id) by_message_id_only = true;
  }
  EXPECT_TRUE(by_custom_args) << "no SendGrid example with email_id / prospect_id custom args";
  EXPECT_TRUE(by_message_id_only) << "no SendGrid example named by sg_message_id alone";
}

}  // namespace
}  // namespace crm::handlers
