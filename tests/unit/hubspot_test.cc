// The HubSpot wire format (http/hubspot.h): request bodies, batch answers,
// error summaries and the rate-limit headers, without a server.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "db/pg_stores.h"
#include "http/hubspot.h"

namespace crm::hubspot {
namespace {

namespace json = boost::json;

http::Response answer(int status, std::string body,
                      std::map<std::string, std::string> headers = {}) {
  http::Response r;
  r.outcome = http::Outcome::kAnswered;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

TEST(HubspotWire, UpsertBodyNamesTheIdPropertyOnEveryInput) {
  const std::string body =
      upsert_body({{"c1", {{"name", "Acme"}, {"crm_id", "c1"}}}, {"c2", {{"name", ""}}}}, "crm_id");
  const json::value v = json::parse(body);
  const json::array& inputs = v.at("inputs").as_array();
  ASSERT_EQ(inputs.size(), 2u);
  EXPECT_EQ(inputs[0].at("id").as_string(), "c1");
  EXPECT_EQ(inputs[0].at("idProperty").as_string(), "crm_id");
  EXPECT_EQ(inputs[0].at("properties").at("name").as_string(), "Acme");
  // An empty value is sent: it clears the property in HubSpot.
  EXPECT_EQ(inputs[1].at("properties").at("name").as_string(), "");
}

TEST(HubspotWire, ReadArchiveAndAssociateBodies) {
  const json::value read = json::parse(read_body({"a", "b"}, "crm_id", {"name", "crm_id"}));
  EXPECT_EQ(read.at("idProperty").as_string(), "crm_id");
  EXPECT_EQ(read.at("inputs").at(1).at("id").as_string(), "b");
  EXPECT_EQ(read.at("properties").as_array().size(), 2u);

  const json::value archive = json::parse(archive_body({"901"}));
  EXPECT_EQ(archive.at("inputs").at(0).at("id").as_string(), "901");

  const json::value link = json::parse(associate_body({{"11", "22"}}));
  EXPECT_EQ(link.at("inputs").at(0).at("from").at("id").as_string(), "11");
  EXPECT_EQ(link.at("inputs").at(0).at("to").at("id").as_string(), "22");
}

TEST(HubspotWire, ObjectTypes) {
  EXPECT_EQ(object_type("company"), "companies");
  EXPECT_EQ(object_type("contact"), "contacts");
  EXPECT_EQ(object_type("deal"), "deals");
}

TEST(HubspotWire, ResultsAreParsedAndOddEntriesSkipped) {
  const auto results = parse_results(R"({"status":"COMPLETE","results":[
      {"id":"101","properties":{"crm_id":"c1","name":"Acme","phone":null},"new":true},
      {"properties":{"crm_id":"c2"}},
      {"id":7},
      "nonsense",
      {"id":"102"}]})");
  ASSERT_TRUE(results);
  ASSERT_EQ(results->size(), 2u);
  EXPECT_EQ((*results)[0].id, "101");
  EXPECT_EQ((*results)[0].properties.at("crm_id"), "c1");
  EXPECT_FALSE((*results)[0].properties.count("phone"));  // null: absent
  EXPECT_EQ((*results)[1].id, "102");
  EXPECT_TRUE((*results)[1].properties.empty());
}

TEST(HubspotWire, AnswersThatAreNotBatchAnswersAreRejected) {
  EXPECT_FALSE(parse_results(""));
  EXPECT_FALSE(parse_results("<html>502 Bad Gateway</html>"));
  EXPECT_FALSE(parse_results(R"({"status":"COMPLETE"})"));
  EXPECT_FALSE(parse_results(R"({"results":{}})"));
  EXPECT_FALSE(parse_results(R"([1,2])"));
  EXPECT_TRUE(parse_results(R"({"results":[]})"));
}

TEST(HubspotWire, ErrorSummaryKeepsCategoryMessageAndCorrelationId) {
  EXPECT_EQ(error_summary(answer(400, R"({"status":"error","message":"Property values were not valid",
      "correlationId":"abc-123","category":"VALIDATION_ERROR"})")),
            "HubSpot answered 400 VALIDATION_ERROR: Property values were not valid "
            "(correlationId abc-123)");
  // A 429 names its errorType rather than a category.
  EXPECT_EQ(error_summary(answer(429, R"({"status":"error","message":"limit","errorType":"RATE_LIMIT"})")),
            "HubSpot answered 429 RATE_LIMIT: limit");
  EXPECT_EQ(error_summary(answer(502, "<html>bad gateway</html>")), "HubSpot answered 502");
  // Bounded and on one line, whatever HubSpot sends.
  const std::string huge = error_summary(
      answer(400, R"({"message":")" + std::string(5000, 'x') + R"(\nsecond line"})"));
  EXPECT_LT(huge.size(), 600u);
  EXPECT_EQ(huge.find('\n'), std::string::npos);
}

// The summary and the ids reach PostgreSQL through a jsonb parameter,
// which is refused whole for a character cut in two or a "\u0000", and with
// it every outcome of the pass (found by fuzz/hubspot_response_fuzz.cc).
TEST(HubspotWire, ErrorSummaryIsTextPostgresAccepts) {
  std::string accents;
  for (int i = 0; i < 300; ++i) accents += "\xC3\xA9";  // é, two bytes each
  const std::string cut = error_summary(
      answer(400, R"({"category":"VALIDATION_ERROR","message":")" + accents + R"("})"));
  EXPECT_TRUE(db::is_storable_text(cut)) << cut;
  EXPECT_EQ(cut.substr(cut.size() - 5), "\xC3\xA9…") << "cut before the split character";
  EXPECT_LE(cut.size(), 503u);

  EXPECT_EQ(error_summary(answer(400, R"({"category":"C\u0000","message":"a\u0000b\u0001c"})")),
            "HubSpot answered 400 C : a b c");
}

TEST(HubspotWire, ResultsWithANulInTheIdAreSkipped) {
  const auto results = parse_results(R"({"results":[{"id":"10\u00001"},{"id":"102"}]})");
  ASSERT_TRUE(results);
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].id, "102");
}

TEST(HubspotWire, RateHeadersAreReadWhenPresentAndSane) {
  const RateHeaders h = rate_headers(answer(200, "", {{"x-hubspot-ratelimit-max", "190"},
                                                      {"x-hubspot-ratelimit-remaining", "12"},
                                                      {"x-hubspot-ratelimit-interval-milliseconds", "10000"}}));
  EXPECT_EQ(h.max, 190);
  EXPECT_EQ(h.remaining, 12);
  EXPECT_EQ(h.interval, Millis{10000});

  const RateHeaders none = rate_headers(answer(200, ""));
  EXPECT_FALSE(none.max || none.remaining || none.interval);

  const RateHeaders bad = rate_headers(answer(200, "", {{"x-hubspot-ratelimit-max", "0"},
                                                        {"x-hubspot-ratelimit-remaining", "-1"},
                                                        {"x-hubspot-ratelimit-interval-milliseconds", "10s"}}));
  EXPECT_FALSE(bad.max || bad.remaining || bad.interval);
}

TEST(HubspotWire, DailyLimitIsToldApartFromTheBurstLimit) {
  EXPECT_TRUE(daily_limit_hit(answer(429, R"({"errorType":"RATE_LIMIT","policyName":"DAILY"})")));
  EXPECT_FALSE(daily_limit_hit(answer(429, R"({"errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"})")));
  EXPECT_FALSE(daily_limit_hit(answer(400, R"({"policyName":"DAILY"})")));
  EXPECT_FALSE(daily_limit_hit(answer(429, "garbage")));
}

}  // namespace
}  // namespace crm::hubspot
