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
