// The crash guard's table operations (db/consume_guard.h) against the real
// PostgreSQL: what the consume loop relies on when a worker dies, is
// retried after a commit in doubt, or gives a message up alive. The
// end-to-end proof is scenario_input_test (CrashPill).

#include <gtest/gtest.h>

#include "db/consume_guard.h"
#include "db/pg_stores.h"
#include "tests/harness/harness.h"

namespace crm::test {
namespace {

const std::string kGroup = "crm-worker";
const std::string kTopic = "crm.outreach.events";

std::string text(const std::vector<db::OffsetRange>& ranges) {
  std::string out;
  for (const auto& r : ranges) {
    out += (out.empty() ? "" : " ") + std::to_string(r.partition) + ":" + std::to_string(r.first) + "-" +
           std::to_string(r.last);
  }
  return out;
}

class ConsumeGuardTest : public ::testing::Test {
 protected:
  template <typename Body>
  auto in_tx(Body&& body) {
    auto c = db_.connect();
    pqxx::work tx(*c);
    auto out = body(tx);
    tx.commit();
    return out;
  }
  void record(const std::string& worker, int partition, long long first, long long last) {
    in_tx([&](pqxx::work& tx) { return db::record_inflight(tx, kGroup, worker, {{kTopic, partition, first, last}}); });
  }
  // What a worker whose delivery of `partition` began at `from` finds.
  std::string left(int partition, long long from = 0) {
    return text(in_tx([&](pqxx::work& tx) { return db::unreleased(tx, kGroup, {{kTopic, partition, from, 0}}); }));
  }
  void release(int partition, long long first, long long last) {
    in_tx([&](pqxx::work& tx) {
      db::release_inflight(tx, kGroup, {{kTopic, partition, first, last}});
      return 0;
    });
  }
  int begin(long long offset, const std::string& worker) {
    return in_tx([&](pqxx::work& tx) {
      db::SoloStart s = db::begin_solo(tx, kGroup, kTopic, 2, offset, worker);
      EXPECT_FALSE(s.crashed_before);
      return s.crashes;
    });
  }
  void forget(long long offset, const std::string& worker) {
    in_tx([&](pqxx::work& tx) {
      db::forget_solo(tx, kGroup, kTopic, 2, offset, worker);
      return 0;
    });
  }
  TestDatabase db_;
};

TEST_F(ConsumeGuardTest, EachWorkersRangeStaysUntilWhoeverAppliesItReleasesIt) {
  record("w1", 0, 10, 19);
  record("w1", 0, 15, 24);  // its next batch: one range per worker
  record("w2", 0, 3, 12);   // a zombie's, or an earlier owner's
  record("w1", 1, 5, 5);
  EXPECT_EQ(left(0), "0:3-12 0:10-24");
  EXPECT_EQ(text(in_tx([&](pqxx::work& tx) { return db::unreleased(tx, "other", {{kTopic, 0, 0, 0}}); })), "")
      << "another group has its own positions";

  // A chunk with 3..12 applied: w2's range is done, w1's starts past it.
  release(0, 3, 12);
  EXPECT_EQ(left(0), "0:13-24");
  // A release below a range's start leaves it alone (the range's first
  // messages are not known to be applied).
  release(0, 20, 30);
  EXPECT_EQ(left(0), "0:13-24");
  release(0, 13, 24);
  EXPECT_EQ(left(0), "");
  EXPECT_EQ(left(1), "1:5-5");
}

TEST_F(ConsumeGuardTest, WhatLiesBelowWhereDeliveryBeganIsAppliedAndForgotten) {
  record("w1", 0, 10, 19);
  record("w2", 0, 0, 5);
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_suspects"), 0);
  in_tx([&](pqxx::work& tx) { return db::begin_solo(tx, kGroup, kTopic, 0, 4, "w3"); });
  // Kafka's committed offset was 8: 0..7 were applied by someone.
  EXPECT_EQ(left(0, 8), "0:10-19");
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_suspects"), 0);
  EXPECT_EQ(left(0, 15), "0:15-19");
  EXPECT_EQ(left(0, 20), "");
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_inflight"), 0);
}

TEST_F(ConsumeGuardTest, AWorkerGivingPartitionsUpAliveDropsOnlyItsOwnRanges) {
  record("w1", 0, 10, 19);
  record("w2", 0, 20, 29);
  record("w1", 1, 0, 9);
  in_tx([&](pqxx::work& tx) {
    db::drop_inflight(tx, kGroup, "w1", {{kTopic, 0, 0, 0}});
    return 0;
  });
  EXPECT_EQ(left(0), "0:20-29");
  EXPECT_EQ(left(1), "1:0-9");
}

TEST_F(ConsumeGuardTest, EveryOtherWorkerThatBeganAMessageAndDidNotLetGoIsADeath) {
  EXPECT_EQ(begin(44, "w1"), 0);
  // The same worker again (its commit was in doubt, it retried): itself
  // is never a death.
  EXPECT_EQ(begin(44, "w1"), 0);
  EXPECT_EQ(begin(44, "w2"), 1);
  EXPECT_EQ(begin(44, "w3"), 2);
  // w3 gives it up alive (revoked, or its database went away): only its own
  // count goes, whoever counted last.
  forget(44, "w3");
  EXPECT_EQ(begin(44, "w4"), 2);
  forget(44, "w1");
  EXPECT_EQ(begin(44, "w4"), 1);
  // Counts are per message.
  EXPECT_EQ(begin(41, "w5"), 0);
  EXPECT_EQ(begin(44, "w5"), 2);
  // Applying a message drops its counts, not other messages'.
  release(2, 41, 41);
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_suspects WHERE \"offset\" = 41"), 0);
  EXPECT_EQ(begin(44, "w6"), 3);
  release(2, 40, 49);
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_suspects"), 0);
  EXPECT_EQ(begin(44, "w7"), 0);
}

TEST_F(ConsumeGuardTest, ACrashedWorkerDeadLetterIsRecognisedOnRedeliveryUntilReplayed) {
  in_tx([&](pqxx::work& tx) {
    db::DeadLetter dl;
    dl.origin = {kTopic, 4, 17, -1};
    dl.payload = "{}";
    dl.reason = "crashed_worker";
    dl.error = "a worker died 3 times";
    db::insert_dead_letter(tx, dl);
    dl.origin.offset = 18;
    dl.reason = "not_json";
    db::insert_dead_letter(tx, dl);
    return 0;
  });
  auto crashed = in_tx([&](pqxx::work& tx) { return db::record_inflight(tx, kGroup, "w1", {{kTopic, 4, 10, 20}}); });
  EXPECT_EQ(text(crashed), "4:17-17");
  const db::SoloStart pill =
      in_tx([&](pqxx::work& tx) { return db::begin_solo(tx, kGroup, kTopic, 4, 17, "w1"); });
  EXPECT_TRUE(pill.crashed_before);
  EXPECT_EQ(db_.count("SELECT count(*) FROM consumer_suspects"), 0) << "a known pill is not counted";
  EXPECT_FALSE(in_tx([&](pqxx::work& tx) { return db::begin_solo(tx, kGroup, kTopic, 4, 18, "w1"); }).crashed_before);
  // Once replayed (the worker was fixed), a redelivery is decoded again.
  db_.count("UPDATE dead_letters SET replayed_at = now() WHERE \"offset\" = 17 RETURNING 1");
  EXPECT_TRUE(
      in_tx([&](pqxx::work& tx) { return db::record_inflight(tx, kGroup, "w1", {{kTopic, 4, 10, 20}}); }).empty());
}

}  // namespace
}  // namespace crm::test
