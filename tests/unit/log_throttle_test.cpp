#include "common/log_throttle.hpp"

#include <gtest/gtest.h>

using volgate::LogThrottle;
using namespace std::chrono_literals;

TEST(LogThrottle, FirstEventGetsALineAtOnce) {
  LogThrottle throttle(1s);
  EXPECT_EQ(throttle.count(LogThrottle::Clock::time_point(100s)), 1u);
}

TEST(LogThrottle, FloodCostsOneLinePerIntervalThatCountsTheEventsHeldBack) {
  LogThrottle throttle(1s);
  const LogThrottle::Clock::time_point start(100s);
  EXPECT_EQ(throttle.count(start), 1u);
  for (int i = 1; i < 1000; ++i) EXPECT_EQ(throttle.count(start + i * 1ms - 1us), 0u) << i;
  // The 999 held back, and this one.
  EXPECT_EQ(throttle.count(start + 1s), 1000u);
  EXPECT_EQ(throttle.count(start + 1s + 1ms), 0u);
  // A quiet spell: the next line comes at once and covers what was held back before it.
  EXPECT_EQ(throttle.count(start + 60s), 2u);
}
