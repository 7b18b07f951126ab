// The retry schedule, computed without a clock or randomness.

#include <gtest/gtest.h>

#include "daemon/core/backoff.h"

namespace crm {
namespace {

TEST(Backoff, DoublesFromInitialAndCaps) {
  const Millis initial{200}, max{10000};
  // unit = 1 gives the cap itself.
  EXPECT_EQ(backoff_delay(0, initial, max, 1.0).count(), 200);
  EXPECT_EQ(backoff_delay(1, initial, max, 1.0).count(), 400);
  EXPECT_EQ(backoff_delay(5, initial, max, 1.0).count(), 6400);
  EXPECT_EQ(backoff_delay(6, initial, max, 1.0).count(), 10000);
  EXPECT_EQ(backoff_delay(1000, initial, max, 1.0).count(), 10000) << "no overflow";
}

TEST(Backoff, JitterStaysWithinHalfCapAndCap) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    Millis lo = backoff_delay(attempt, Millis{1000}, Millis{600000}, 0.0);
    Millis hi = backoff_delay(attempt, Millis{1000}, Millis{600000}, 0.999999);
    EXPECT_EQ(lo * 2, backoff_delay(attempt, Millis{1000}, Millis{600000}, 1.0)) << attempt;
    EXPECT_LE(hi, backoff_delay(attempt, Millis{1000}, Millis{600000}, 1.0));
    EXPECT_GT(lo.count(), 0) << "never a tight loop";
  }
}

TEST(Backoff, DegenerateInputsAreSafe) {
  EXPECT_GE(backoff_delay(-5, Millis{0}, Millis{0}, 0.5).count(), 0);
  EXPECT_EQ(backoff_delay(3, Millis{100}, Millis{100}, 1.0).count(), 100);
  EXPECT_EQ(backoff_delay(0, Millis{100}, Millis{1000}, 7.0).count(), 100) << "unit clamped";
}

}  // namespace
}  // namespace crm
