// The fake HubSpot that the sync tests run against, checked over real
// loopback sockets with the worker's own HTTP client. Guarantees checked:
// upserts create then update the same object (new=false), reads answer 207
// for the missing, archives hide objects, associations are two-way, a
// rejected value or an unknown id fails the whole batch and applies nothing,
// the rolling rate limit answers 429 with HubSpot's body and headers and is
// counted, scripted failures take precedence over the stateful behaviour, and
// a request without a bearer token is refused. Also the FakeHttpServer
// handler hook the fake is built on. No PostgreSQL needed.

#include "tests/harness/fake_hubspot.h"

#include <chrono>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include "http/client.h"
#include "tests/harness/fake_http.h"

namespace crm::test {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

class FakeHubspotTest : public ::testing::Test {
 protected:
  http::Response post(const std::string& path, const std::string& body,
                      const std::string& authorization = "Bearer pat-na1-test") {
    http::Request r;
    r.url = hubspot_.base_url() + path;
    r.headers = {{"Content-Type", "application/json"}};
    if (!authorization.empty()) r.headers.emplace_back("Authorization", authorization);
    r.body = body;
    r.timeout = milliseconds(2000);
    http::Response response = client_.post(r);
    EXPECT_EQ(response.outcome, http::Outcome::kAnswered) << response.error;
    return response;
  }

  static json::object body_of(const http::Response& r) {
    json::error_code ec;
    json::value v = json::parse(r.body, ec);
    EXPECT_FALSE(ec) << r.body;
    return v.is_object() ? v.get_object() : json::object{};
  }

  static std::string str(const json::value& v) {
    return v.is_string() ? std::string(v.get_string()) : json::serialize(v);
  }

  FakeHubspot hubspot_;
  http::Client client_;  // after the fake: closes its connections first
};

const std::string kUpsertTwoCompanies = R"({"inputs":[
  {"id":"C-1","idProperty":"crm_id","properties":{"name":"Acme"}},
  {"id":"C-2","idProperty":"crm_id","properties":{"name":"Beta"}}]})";

TEST_F(FakeHubspotTest, UpsertCreatesThenUpdatesTheSameObject) {
  const auto created = post(FakeHubspot::upsert_path("companies"), kUpsertTwoCompanies);
  ASSERT_EQ(created.status, 200) << created.body;
  json::object body = body_of(created);
  EXPECT_EQ(str(body["status"]), "COMPLETE");
  EXPECT_FALSE(str(body["startedAt"]).empty());
  EXPECT_FALSE(str(body["completedAt"]).empty());
  json::array results = body["results"].as_array();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(str(results[0].at("id")), "1001");
  EXPECT_EQ(str(results[1].at("id")), "1002");
  EXPECT_TRUE(results[0].at("new").as_bool());
  EXPECT_EQ(str(results[0].at("properties").at("crm_id")), "C-1");
  EXPECT_EQ(str(results[0].at("properties").at("name")), "Acme");
  EXPECT_FALSE(str(results[0].at("createdAt")).empty());

  const auto updated = post(FakeHubspot::upsert_path("companies"), R"({"inputs":[
    {"id":"C-1","idProperty":"crm_id","properties":{"name":"Acme Ltd","domain":"acme.test"}}]})");
  ASSERT_EQ(updated.status, 200) << updated.body;
  json::object again = body_of(updated);
  const json::value& result = again["results"].as_array().at(0);
  EXPECT_EQ(str(result.at("id")), "1001");
  EXPECT_FALSE(result.at("new").as_bool());
  EXPECT_EQ(str(result.at("properties").at("name")), "Acme Ltd");

  const auto c1 = hubspot_.find("companies", "C-1");
  ASSERT_TRUE(c1.has_value());
  EXPECT_EQ(c1->id, "1001");
  const std::map<std::string, std::string> expected = {
      {"crm_id", "C-1"}, {"name", "Acme Ltd"}, {"domain", "acme.test"}};
  EXPECT_EQ(c1->properties, expected);
  EXPECT_FALSE(c1->archived);
  EXPECT_EQ(hubspot_.objects("companies").size(), 2u);
  EXPECT_TRUE(hubspot_.objects("deals").empty());
  EXPECT_EQ(hubspot_.upserts_of("companies", "C-1"), 2);
  EXPECT_EQ(hubspot_.upserts_of("companies", "C-2"), 1);
  EXPECT_EQ(hubspot_.requests_of("upsert"), 2);
  EXPECT_EQ(hubspot_.requests_of("upsert", "companies"), 2);
  EXPECT_EQ(hubspot_.requests_of("upsert", "deals"), 0);

  EXPECT_EQ(updated.headers.at("x-hubspot-ratelimit-max"), "100");
  EXPECT_EQ(updated.headers.at("x-hubspot-ratelimit-remaining"), "98");
  EXPECT_EQ(updated.headers.at("x-hubspot-ratelimit-interval-milliseconds"), "10000");
}

TEST_F(FakeHubspotTest, MalformedUpsertsAre400AndCreateNothing) {
  std::string too_many = R"({"inputs":[)";
  for (int i = 0; i < 101; ++i) {
    if (i > 0) too_many += ',';
    too_many += R"({"id":"C-)" + std::to_string(i) + R"(","idProperty":"crm_id","properties":{}})";
  }
  too_many += "]}";
  const std::string cases[] = {
      too_many,
      R"({"inputs":[{"id":"C-1","idProperty":"email","properties":{}}]})",
      R"({"inputs":[{"id":"C-1","properties":{}}]})",
      R"({"inputs":[{"id":"C-1","idProperty":"crm_id","properties":{"employees":12}}]})",
      R"({"inputs":[{"id":"C-1","idProperty":"crm_id","properties":{}},
                    {"id":"C-1","idProperty":"crm_id","properties":{}}]})",
      R"({"inputs":[{"id":"C-1","idProperty":"crm_id","properties":{}})",
      "not json",
  };
  for (const std::string& body : cases) {
    const auto r = post(FakeHubspot::upsert_path("companies"), body);
    EXPECT_EQ(r.status, 400) << body;
    json::object error = body_of(r);
    EXPECT_EQ(str(error["status"]), "error");
    EXPECT_EQ(str(error["category"]), "VALIDATION_ERROR");
    EXPECT_FALSE(str(error["correlationId"]).empty());
    EXPECT_FALSE(str(error["message"]).empty());
    EXPECT_TRUE(r.headers.contains("x-hubspot-ratelimit-remaining")) << "errors carry them too";
  }
  EXPECT_TRUE(hubspot_.objects("companies").empty());
  EXPECT_EQ(hubspot_.upserts_of("companies", "C-1"), 0);
}

TEST_F(FakeHubspotTest, ReadByIdPropertyAnswers207ForTheMissing) {
  const std::string id = hubspot_.seed(
      "contacts", {{"crm_id", "P-1"}, {"email", "ada@example.com"}, {"firstname", "Ada"}});

  const auto partial = post(FakeHubspot::read_path("contacts"), R"({
    "idProperty":"crm_id","properties":["email","phone"],
    "inputs":[{"id":"P-1"},{"id":"P-9"}]})");
  ASSERT_EQ(partial.status, 207) << partial.body;
  json::object body = body_of(partial);
  ASSERT_EQ(body["results"].as_array().size(), 1u);
  const json::value& found = body["results"].as_array()[0];
  EXPECT_EQ(str(found.at("id")), id);
  const json::object expected_props = {
      {"email", "ada@example.com"}, {"phone", nullptr}, {"crm_id", "P-1"}};
  EXPECT_EQ(found.at("properties").as_object(), expected_props)
      << "only the requested properties and the id property; unset ones as null";
  ASSERT_EQ(body["errors"].as_array().size(), 1u);
  const json::value& error = body["errors"].as_array()[0];
  EXPECT_EQ(str(error.at("category")), "OBJECT_NOT_FOUND");
  EXPECT_EQ(error.at("context").at("ids"), (json::array{"P-9"}));

  const auto all_found = post(FakeHubspot::read_path("contacts"),
                              R"({"idProperty":"crm_id","inputs":[{"id":"P-1"}]})");
  EXPECT_EQ(all_found.status, 200) << all_found.body;
  EXPECT_FALSE(body_of(all_found).contains("errors"));

  // Without idProperty the ids are HubSpot's own.
  const auto by_hubspot_id =
      post(FakeHubspot::read_path("contacts"),
           R"({"properties":["firstname"],"inputs":[{"id":")" + id + R"("},{"id":"P-1"}]})");
  ASSERT_EQ(by_hubspot_id.status, 207) << by_hubspot_id.body;
  json::object by_id = body_of(by_hubspot_id);
  EXPECT_EQ(str(by_id["results"].as_array().at(0).at("properties").at("firstname")), "Ada");
  EXPECT_EQ(by_id["errors"].as_array().at(0).at("context").at("ids"), (json::array{"P-1"}));
  EXPECT_EQ(hubspot_.requests_of("read", "contacts"), 3);
}

TEST_F(FakeHubspotTest, ArchiveHidesTheObjectAndAnUpsertThenCreatesANewOne) {
  const std::string id = hubspot_.seed("deals", {{"crm_id", "D-1"}, {"dealname", "First"}});

  const auto archived =
      post(FakeHubspot::archive_path("deals"),
           R"({"inputs":[{"id":")" + id + R"("},{"id":"999999"}]})");  // unknown: ignored
  EXPECT_EQ(archived.status, 204) << archived.body;
  EXPECT_TRUE(archived.body.empty());
  EXPECT_FALSE(hubspot_.find("deals", "D-1").has_value());
  const auto old = hubspot_.find_by_id("deals", id);
  ASSERT_TRUE(old.has_value());
  EXPECT_TRUE(old->archived);

  const auto read = post(FakeHubspot::read_path("deals"), R"({"inputs":[{"id":")" + id + R"("}]})");
  EXPECT_EQ(read.status, 207) << "an archived object is not found";

  const auto upserted = post(FakeHubspot::upsert_path("deals"), R"({"inputs":[
    {"id":"D-1","idProperty":"crm_id","properties":{"dealname":"Second"}}]})");
  ASSERT_EQ(upserted.status, 200) << upserted.body;
  const json::value result = body_of(upserted)["results"].as_array().at(0);
  EXPECT_TRUE(result.at("new").as_bool());
  EXPECT_NE(str(result.at("id")), id);
  const auto fresh = hubspot_.find("deals", "D-1");
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->id, str(result.at("id")));
  EXPECT_TRUE(hubspot_.find_by_id("deals", id)->archived) << "the old one stays archived";
  EXPECT_EQ(hubspot_.objects("deals").size(), 2u);
}

TEST_F(FakeHubspotTest, AssociationsAreTwoWayAndAnUnknownIdAppliesNothing) {
  const std::string company = hubspot_.seed("companies", {{"crm_id", "C-1"}});
  const std::string deal = hubspot_.seed("deals", {{"crm_id", "D-1"}});
  const std::string deal2 = hubspot_.seed("deals", {{"crm_id", "D-2"}});

  const auto made =
      post(FakeHubspot::associate_path("deals", "companies"),
           R"({"inputs":[{"from":{"id":")" + deal + R"("},"to":{"id":")" + company + R"("}}]})");
  ASSERT_EQ(made.status, 200) << made.body;
  json::object body = body_of(made);
  EXPECT_EQ(str(body["status"]), "COMPLETE");
  const json::value& result = body["results"].as_array().at(0);
  EXPECT_EQ(str(result.at("from").at("id")), deal);
  EXPECT_EQ(str(result.at("to").at("id")), company);
  EXPECT_EQ(result.at("associationSpec").at("associationTypeId").to_number<int>(), 341);

  using Pairs = std::set<std::pair<std::string, std::string>>;
  EXPECT_EQ(hubspot_.associations("deals", "companies"), (Pairs{{deal, company}}));
  EXPECT_EQ(hubspot_.associations("companies", "deals"), (Pairs{{company, deal}}));

  const auto refused =
      post(FakeHubspot::associate_path("deals", "companies"),
           R"({"inputs":[{"from":{"id":")" + deal2 + R"("},"to":{"id":")" + company +
               R"("}},{"from":{"id":")" + deal2 + R"("},"to":{"id":"424242"}}]})");
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(str(body_of(refused)["category"]), "VALIDATION_ERROR");
  EXPECT_EQ(hubspot_.associations("deals", "companies"), (Pairs{{deal, company}}))
      << "the valid input of a refused batch is not applied";
  EXPECT_EQ(hubspot_.requests_of("associate", "deals"), 2);
}

TEST_F(FakeHubspotTest, ARejectedValueFailsTheWholeBatchAndAppliesNothing) {
  hubspot_.reject_value("name", "BOOM");
  const auto upsert = post(FakeHubspot::upsert_path("companies"), R"({"inputs":[
    {"id":"C-1","idProperty":"crm_id","properties":{"name":"Fine"}},
    {"id":"C-2","idProperty":"crm_id","properties":{"name":"BOOM"}}]})");
  EXPECT_EQ(upsert.status, 400) << upsert.body;
  json::object error = body_of(upsert);
  EXPECT_EQ(str(error["category"]), "VALIDATION_ERROR");
  EXPECT_NE(str(error["message"]).find("C-2"), std::string::npos) << "names the bad input";
  EXPECT_TRUE(hubspot_.objects("companies").empty());
  EXPECT_EQ(hubspot_.upserts_of("companies", "C-1"), 0);

  // Archive and associate are refused when they name an object with the value.
  const std::string bad = hubspot_.seed("companies", {{"crm_id", "C-3"}, {"name", "BOOM"}});
  const std::string good = hubspot_.seed("companies", {{"crm_id", "C-4"}, {"name", "Fine"}});
  const auto archive = post(FakeHubspot::archive_path("companies"),
                            R"({"inputs":[{"id":")" + good + R"("},{"id":")" + bad + R"("}]})");
  EXPECT_EQ(archive.status, 400) << archive.body;
  EXPECT_FALSE(hubspot_.find_by_id("companies", good)->archived);
  EXPECT_FALSE(hubspot_.find_by_id("companies", bad)->archived);

  const std::string deal = hubspot_.seed("deals", {{"crm_id", "D-1"}});
  const auto associate =
      post(FakeHubspot::associate_path("deals", "companies"),
           R"({"inputs":[{"from":{"id":")" + deal + R"("},"to":{"id":")" + bad + R"("}}]})");
  EXPECT_EQ(associate.status, 400) << associate.body;
  EXPECT_TRUE(hubspot_.associations("deals", "companies").empty());
}

TEST_F(FakeHubspotTest, TheRollingLimitAnswers429WithHeadersAndCountsIt) {
  constexpr milliseconds kInterval{500};
  hubspot_.set_rate_limit(3, kInterval);
  const std::string read = R"({"idProperty":"crm_id","inputs":[{"id":"X"}]})";

  // Five at once: three fit in the window, two are over it.
  for (int i = 0; i < 5; ++i) {
    const auto r = post(FakeHubspot::read_path("companies"), read);
    EXPECT_EQ(r.headers.at("x-hubspot-ratelimit-max"), "3");
    EXPECT_EQ(r.headers.at("x-hubspot-ratelimit-interval-milliseconds"), "500");
    if (i < 3) {
      EXPECT_EQ(r.status, 207) << i;
      EXPECT_EQ(r.headers.at("x-hubspot-ratelimit-remaining"), std::to_string(2 - i));
      continue;
    }
    EXPECT_EQ(r.status, 429) << i;
    EXPECT_EQ(r.headers.at("x-hubspot-ratelimit-remaining"), "0");
    json::object body = body_of(r);
    EXPECT_EQ(str(body["status"]), "error");
    EXPECT_EQ(str(body["errorType"]), "RATE_LIMIT");
    EXPECT_EQ(str(body["policyName"]), "TEN_SECONDLY_ROLLING");
    EXPECT_EQ(str(body["message"]), "You have reached your ten_secondly_rolling limit.");
    EXPECT_FALSE(str(body["correlationId"]).empty());
  }
  EXPECT_EQ(hubspot_.rate_limit_violations(), 2);
  EXPECT_EQ(hubspot_.requests_of("read"), 3) << "a refused request reaches no endpoint";
  EXPECT_EQ(hubspot_.max_requests_in_any_interval(), 5) << "refused ones were sent all the same";

  // Once the window has rolled past them, requests are accepted again.
  std::this_thread::sleep_for(kInterval + milliseconds(50));
  const auto later = post(FakeHubspot::read_path("companies"), read);
  EXPECT_EQ(later.status, 207);
  EXPECT_EQ(later.headers.at("x-hubspot-ratelimit-remaining"), "2");
  EXPECT_EQ(hubspot_.rate_limit_violations(), 2);
  EXPECT_EQ(hubspot_.max_requests_in_any_interval(), 5);
}

TEST_F(FakeHubspotTest, ScriptedAnswersGoBeforeTheStatefulBehaviour) {
  Answer unavailable;
  unavailable.status = 503;
  unavailable.body = "upstream unavailable";
  hubspot_.http().script(FakeHubspot::upsert_path("deals"), {unavailable});
  const std::string body =
      R"({"inputs":[{"id":"D-1","idProperty":"crm_id","properties":{"dealname":"X"}}]})";

  const auto first = post(FakeHubspot::upsert_path("deals"), body);
  EXPECT_EQ(first.status, 503);
  EXPECT_EQ(first.body, "upstream unavailable");
  EXPECT_FALSE(first.headers.contains("x-hubspot-ratelimit-remaining"));
  EXPECT_FALSE(hubspot_.find("deals", "D-1").has_value());
  EXPECT_EQ(hubspot_.upserts_of("deals", "D-1"), 0);

  const auto second = post(FakeHubspot::upsert_path("deals"), body);
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.headers.at("x-hubspot-ratelimit-remaining"), "99")
      << "the scripted request did not count against the limit";
  EXPECT_TRUE(hubspot_.find("deals", "D-1").has_value());
  EXPECT_EQ(hubspot_.upserts_of("deals", "D-1"), 1);
  EXPECT_EQ(hubspot_.http().requests(FakeHubspot::upsert_path("deals")).size(), 2u);
  EXPECT_EQ(hubspot_.max_requests_in_any_interval(), 2);
}

TEST_F(FakeHubspotTest, WithoutABearerTokenTheAnswerIs401AndNothingIsApplied) {
  const std::string body =
      R"({"inputs":[{"id":"C-1","idProperty":"crm_id","properties":{"name":"X"}}]})";
  for (const std::string auth : {"", "Bearer ", "Basic dXNlcjpwYXNz"}) {
    const auto r = post(FakeHubspot::upsert_path("companies"), body, auth);
    EXPECT_EQ(r.status, 401) << auth;
    json::object error = body_of(r);
    EXPECT_EQ(str(error["category"]), "INVALID_AUTHENTICATION");
    EXPECT_EQ(str(error["status"]), "error");
    EXPECT_FALSE(str(error["correlationId"]).empty());
  }
  EXPECT_TRUE(hubspot_.objects("companies").empty());
  EXPECT_EQ(hubspot_.requests_of("upsert"), 0);
}

TEST_F(FakeHubspotTest, UnknownPathsAre404AndTheQueryStringIsInTheLedger) {
  const auto tickets = post("/crm/v3/objects/tickets/batch/upsert", R"({"inputs":[]})");
  EXPECT_EQ(tickets.status, 404);
  EXPECT_EQ(str(body_of(tickets)["status"]), "error");

  const auto with_query =
      post(FakeHubspot::upsert_path("companies") + "?archived=false&x=1", kUpsertTwoCompanies);
  EXPECT_EQ(with_query.status, 200) << "routed by the path alone";
  const auto ledger = hubspot_.http().requests(FakeHubspot::upsert_path("companies"));
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger[0].query, "archived=false&x=1");
  EXPECT_EQ(ledger[0].method, "POST");
  EXPECT_EQ(hubspot_.http().requests("/crm/v3/objects/tickets/batch/upsert")[0].query, "");
}

TEST_F(FakeHubspotTest, ConcurrentClientsGetDistinctObjects) {
  constexpr int kThreads = 4;
  constexpr int kEach = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      http::Client client;  // one per thread, as in the worker
      for (int i = 0; i < kEach; ++i) {
        http::Request r;
        r.url = hubspot_.base_url() + FakeHubspot::upsert_path("contacts");
        r.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer t"}};
        r.body = R"({"inputs":[{"id":"P-)" + std::to_string(t) + "-" + std::to_string(i) +
                 R"(","idProperty":"crm_id","properties":{}}]})";
        r.timeout = milliseconds(2000);
        EXPECT_EQ(client.post(r).status, 200);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (const HubspotObject& o : hubspot_.objects("contacts")) ids.insert(o.id);
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kThreads * kEach));
  EXPECT_EQ(hubspot_.max_requests_in_any_interval(), kThreads * kEach);
  EXPECT_EQ(hubspot_.rate_limit_violations(), 0);
}

// The hook FakeHubspot is built on: scripts first, then the handler with the
// longest matching prefix, then the path's default, then 404.
TEST(FakeHttpServerHandlerTest, ScriptThenLongestPrefixHandlerThenDefault) {
  FakeHttpServer server;
  auto answering = [](int status) {
    return [status](const Received& r) {
      Answer a;
      a.status = status;
      // Not the target as sent: the client cuts a URL's path out of
      // answers that echo it (a webhook's path is its secret).
      a.body = r.path + "|" + r.query;
      return a;
    };
  };
  Answer scripted;
  scripted.status = 500;
  Answer created;
  created.status = 201;
  server.script("/a/b", {scripted});
  server.set_default("/a/b", created);
  server.set_default("/x", created);
  server.set_handler("/a", answering(202));
  server.set_handler("/a/b", answering(203));
  server.set_handler("/boom",
                     [](const Received&) -> Answer { throw std::runtime_error("handler bug"); });

  http::Client client;
  auto status_of = [&](const std::string& target, std::string* body = nullptr) {
    http::Request r;
    r.url = server.base_url() + target;
    r.headers = {{"Content-Type", "text/plain"}};
    r.timeout = milliseconds(2000);
    const http::Response response = client.post(r);
    if (body != nullptr) *body = response.body;
    return response.status;
  };
  EXPECT_EQ(status_of("/a/b"), 500) << "the script first";
  std::string body;
  EXPECT_EQ(status_of("/a/b?q=1", &body), 203) << "then the longest prefix";
  EXPECT_EQ(body, "/a/b|q=1") << "the handler sees path and query apart";
  EXPECT_EQ(status_of("/a/c"), 202);
  EXPECT_EQ(status_of("/x"), 201) << "no handler: the default";
  EXPECT_EQ(status_of("/y"), 404);
  EXPECT_EQ(status_of("/boom", &body), 500);
  EXPECT_NE(body.find("handler bug"), std::string::npos);

  server.set_handler("/a/b", nullptr);
  EXPECT_EQ(status_of("/a/b"), 202) << "removed: the shorter prefix takes over";
  EXPECT_EQ(server.requests().size(), 7u) << "every request is in the ledger";
}

}  // namespace
}  // namespace crm::test
