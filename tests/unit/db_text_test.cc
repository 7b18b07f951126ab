// The byte helpers that keep arbitrary Kafka bytes storable in PostgreSQL:
// hex for bytea parameters, and the check for what a text column accepts.

#include <gtest/gtest.h>

#include "db/database.h"
#include "db/pg_stores.h"

namespace crm::db {
namespace {

TEST(Hex, RoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  std::string hex = to_hex(all);
  EXPECT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.substr(0, 6), "000102");
  EXPECT_EQ(from_hex(hex), all);
  EXPECT_EQ(from_hex("4A4b"), "JK");
  EXPECT_EQ(from_hex("41zz42"), "A") << "stops at the first bad pair";
}

TEST(StorableText, AcceptsUtf8AndRejectsWhatPostgresRejects) {
  EXPECT_TRUE(is_storable_text(""));
  EXPECT_TRUE(is_storable_text("plain ascii"));
  EXPECT_TRUE(is_storable_text("caf\xc3\xa9 \xe2\x80\xae \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_storable_text(std::string("a\0b", 3))) << "NUL";
  EXPECT_FALSE(is_storable_text("\xc3")) << "truncated";
  EXPECT_FALSE(is_storable_text("\xe2\x80")) << "truncated";
  EXPECT_FALSE(is_storable_text("\xc0\xaf")) << "overlong";
  EXPECT_FALSE(is_storable_text("\xed\xa0\x80")) << "surrogate";
  EXPECT_FALSE(is_storable_text("\xf4\x90\x80\x80")) << "above U+10FFFF";
  EXPECT_FALSE(is_storable_text("\xff")) << "not a lead byte";
  EXPECT_FALSE(is_storable_text("\x80")) << "lone continuation";
}

}  // namespace
}  // namespace crm::db

namespace crm::db {
namespace {

TEST(Conninfo, AddsTimeoutsAndKeepsWhatTheOperatorSet) {
  auto ci = build_conninfo("postgresql://crm@db.example.com:6543/crm?connect_timeout=9", 5);
  ASSERT_TRUE(ci.is_ok());
  EXPECT_NE(ci->find("host='db.example.com'"), std::string::npos) << *ci;
  EXPECT_NE(ci->find("port='6543'"), std::string::npos) << *ci;
  EXPECT_NE(ci->find("connect_timeout='9'"), std::string::npos) << *ci;
  EXPECT_NE(ci->find("keepalives_idle='30'"), std::string::npos) << *ci;
  EXPECT_NE(ci->find("application_name='crm-worker'"), std::string::npos) << *ci;
  auto kw = build_conninfo("host=/tmp dbname='a b' user=x", 5);
  ASSERT_TRUE(kw.is_ok());
  EXPECT_NE(kw->find("dbname='a b'"), std::string::npos) << *kw;
  EXPECT_NE(kw->find("connect_timeout='5'"), std::string::npos) << *kw;
}

TEST(Conninfo, RefusesUnparsableUrlsWithoutRepeatingThem) {
  for (const char* bad : {"postgresql://u:s3cr%ZZet@host/db", "host=x password=my secret",
                          "postgresql://u:pw@host:notaport/db?connect_timeout=1&bogus_key=1"}) {
    auto ci = build_conninfo(bad, 5);
    ASSERT_FALSE(ci.is_ok()) << bad;
    EXPECT_TRUE(ci.status().is_permanent());
    EXPECT_EQ(ci.status().message().find("s3cr"), std::string::npos);
    EXPECT_EQ(ci.status().message().find("secret"), std::string::npos);
  }
}

}  // namespace
}  // namespace crm::db
