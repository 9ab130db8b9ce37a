#include "nbd/connection_limit.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <utility>
#include <vector>

using volgate::nbd::ConnectionLimit;

TEST(ConnectionLimit, RefusesPastTheMaximumUntilASlotComesBack) {
  ConnectionLimit limit(3);
  std::vector<ConnectionLimit::Slot> slots;
  for (int i = 0; i < 3; ++i) {
    auto slot = limit.try_open();
    ASSERT_TRUE(slot.has_value()) << i;
    slots.push_back(std::move(*slot));
  }
  EXPECT_EQ(limit.open(), 3u);
  EXPECT_FALSE(limit.try_open().has_value());
  slots.pop_back();
  EXPECT_EQ(limit.open(), 2u);
  EXPECT_TRUE(limit.try_open().has_value());  // and given back at once, as a temporary
  EXPECT_EQ(limit.open(), 2u);
}

TEST(ConnectionLimit, MovedSlotIsGivenBackOnce) {
  ConnectionLimit limit(2);
  std::optional<ConnectionLimit::Slot> slot = limit.try_open();
  ASSERT_TRUE(slot);
  {
    ConnectionLimit::Slot moved(std::move(*slot));  // the connection moved to another thread
    slot.reset();
    EXPECT_EQ(limit.open(), 1u);
    ConnectionLimit::Slot assigned;
    assigned = std::move(moved);
    EXPECT_EQ(limit.open(), 1u);
  }
  EXPECT_EQ(limit.open(), 0u);
  ConnectionLimit::Slot empty;  // holds nothing, gives back nothing
}
