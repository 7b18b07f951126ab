// crm.prospect.discovered through an in-memory ProspectStore: what the
// handler asks of the store, and how it rejects input that breaks the
// contract. The PostgreSQL store's behaviour for the same events is covered
// by the consume-loop integration tests.

#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "handlers/prospects.h"
#include "handlers/routing.h"

namespace crm::handlers {
namespace {

// Keeps, per prospect, every discovered profile it was given, and answers
// with the same rule the PostgreSQL store implements: each field from the
// newest event (time, then id) that carries it.
class FakeProspectStore : public ProspectStore {
 public:
  struct Seen {
    ProspectProfile profile;
    Timestamp at;
    std::string event_id;
  };
  Status apply_discovered(const ProspectProfile& p, Timestamp at, const std::string& id) override {
    seen[p.id].push_back({p, at, id});
    return Status::ok();
  }
  Status record_stage(const std::string& pid, const std::string& stage, Timestamp at,
                      const std::string&) override {
    auto key = std::make_pair(pid, stage);
    auto it = stages.find(key);
    if (it == stages.end() || at < it->second) stages[key] = at;
    return Status::ok();
  }
  std::optional<std::string> field(const std::string& pid,
                                   std::optional<std::string> ProspectProfile::*member) const {
    const Seen* best = nullptr;
    for (const Seen& s : seen.at(pid)) {
      if (!(s.profile.*member)) continue;
      if (!best || std::tie(s.at, s.event_id) > std::tie(best->at, best->event_id)) best = &s;
    }
    return best ? best->profile.*member : std::nullopt;
  }

  std::map<std::string, std::vector<Seen>> seen;
  std::map<std::pair<std::string, std::string>, Timestamp> stages;
};

Event discovered(const std::string& id, std::int64_t at, boost::json::object data) {
  Event e;
  e.id = id;
  e.type = "crm.prospect.discovered";
  e.source = "test";
  e.time = Timestamp{at};
  e.data = std::move(data);
  return e;
}

TEST(ProspectDiscoveredHandler, PassesEveryFieldAndRecordsTheStage) {
  FakeProspectStore store;
  Stores stores{store};
  ProspectDiscoveredHandler h;
  Status s = h.handle(discovered("e1", 100, {{"prospect_id", "p1"}, {"name", "Ada"}, {"email", "a@x"},
                                             {"phone", "1"}, {"company", "C"}, {"source", "s"},
                                             {"category", "k"}, {"urgency", "high"}}),
                      stores);
  ASSERT_TRUE(s.is_ok()) << s.message();
  const ProspectProfile& p = store.seen.at("p1").at(0).profile;
  EXPECT_EQ(p.name, "Ada");
  EXPECT_EQ(p.email, "a@x");
  EXPECT_EQ(p.phone, "1");
  EXPECT_EQ(p.company, "C");
  EXPECT_EQ(p.source, "s");
  EXPECT_EQ(p.category, "k");
  EXPECT_EQ(p.urgency, "high");
  EXPECT_EQ(store.stages.at({"p1", "discovered"}).micros_since_epoch, 100);
}

TEST(ProspectDiscoveredHandler, AbsentAndNullFieldsStayUnset) {
  FakeProspectStore store;
  Stores stores{store};
  ProspectDiscoveredHandler h;
  ASSERT_TRUE(h.handle(discovered("e1", 1, {{"prospect_id", "p1"}, {"name", "Ada"}, {"email", nullptr}}), stores).is_ok());
  EXPECT_FALSE(store.seen.at("p1").at(0).profile.email.has_value());
  EXPECT_FALSE(store.seen.at("p1").at(0).profile.phone.has_value());
}

TEST(ProspectDiscoveredHandler, RejectsContractViolationsAsPermanent) {
  FakeProspectStore store;
  Stores stores{store};
  ProspectDiscoveredHandler h;
  struct Case {
    boost::json::object data;
    const char* reason;
  } cases[] = {
      {{{"name", "Ada"}}, "missing_field"},
      {{{"prospect_id", "p1"}}, "missing_field"},
      {{{"prospect_id", ""}, {"name", "Ada"}}, "missing_field"},
      {{{"prospect_id", 7}, {"name", "Ada"}}, "wrong_type"},
      {{{"prospect_id", "p1"}, {"name", "Ada"}, {"email", true}}, "wrong_type"},
  };
  for (auto& c : cases) {
    Status s = h.handle(discovered("e", 1, c.data), stores);
    EXPECT_TRUE(s.is_permanent()) << boost::json::serialize(c.data);
    EXPECT_EQ(s.reason(), c.reason) << boost::json::serialize(c.data);
  }
  EXPECT_TRUE(store.seen.empty()) << "nothing reaches the store on invalid input";
}

// The rule the stores implement, checked on the fake: any arrival order
// gives the newest value per field, and the earliest stage date.
TEST(ProspectDiscoveredHandler, ResultDoesNotDependOnArrivalOrder) {
  std::vector<Event> events = {
      discovered("e1", 10, {{"prospect_id", "p"}, {"name", "A"}, {"email", "old@x"}}),
      discovered("e2", 20, {{"prospect_id", "p"}, {"name", "B"}}),
      discovered("e3", 5, {{"prospect_id", "p"}, {"name", "Z"}, {"email", "oldest@x"}, {"phone", "9"}}),
  };
  std::vector<int> order = {0, 1, 2};
  do {
    FakeProspectStore store;
    Stores stores{store};
    ProspectDiscoveredHandler h;
    for (int i : order) ASSERT_TRUE(h.handle(events[i], stores).is_ok());
    EXPECT_EQ(store.field("p", &ProspectProfile::name), "B");
    EXPECT_EQ(store.field("p", &ProspectProfile::email), "old@x");
    EXPECT_EQ(store.field("p", &ProspectProfile::phone), "9");
    EXPECT_EQ(store.stages.at({"p", "discovered"}).micros_since_epoch, 5);
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST(Routing, EveryRoutedTypeFindsItsHandlerAndUnknownFindsNone) {
  ASSERT_FALSE(routed_types().empty());
  for (auto type : routed_types()) EXPECT_NE(find_handler(type), nullptr) << type;
  EXPECT_EQ(find_handler("crm.no.such.type"), nullptr);
  EXPECT_EQ(find_handler(""), nullptr);
}

}  // namespace
}  // namespace crm::handlers
