#include "backends/data_ranges.hpp"

#include <gtest/gtest.h>

using namespace volgate::backends;

namespace {

// "D8 H4" style: one letter per extent kind (D data, H hole) with its length.
std::string describe(const std::vector<Extent>& extents) {
  std::string text;
  for (const auto& e : extents) {
    EXPECT_EQ(e.hole, e.zero) << "holes read as zeroes, data does not";
    if (!text.empty()) text += ' ';
    text += (e.hole ? 'H' : 'D') + std::to_string(e.length);
  }
  return text;
}

}  // namespace

TEST(DataRanges, NothingListedIsOneHole) {
  EXPECT_EQ(describe(extents_from_data(100, 200, {}, 1024)), "H100");
}

TEST(DataRanges, HolesBetweenUnorderedRanges) {
  EXPECT_EQ(describe(extents_from_data(0, 100, {{60, 10}, {10, 20}}, 1024)), "H10 D20 H30 D10 H30");
}

TEST(DataRanges, ClippedToTheWindowAndMerged) {
  // sticks out on both sides, overlaps, touches
  EXPECT_EQ(describe(extents_from_data(50, 150, {{0, 60}, {55, 10}, {65, 5}, {140, 100}}, 1024)),
            "D20 H70 D10");
  EXPECT_EQ(describe(extents_from_data(50, 150, {{0, 50}, {150, 10}}, 1024)), "H100");
  EXPECT_EQ(describe(extents_from_data(0, 100, {{0, 100}}, 1024)), "D100");
}

TEST(DataRanges, StopsAfterTheExtentLimit) {
  std::vector<DataRange> many;
  for (uint64_t i = 0; i < 100; ++i) many.push_back({i * 10 + 5, 5});
  auto extents = extents_from_data(0, 1000, many, 8);
  EXPECT_EQ(describe(extents), "H5 D5 H5 D5 H5 D5 H5 D5");
  uint64_t covered = 0;
  for (const auto& e : extents) covered += e.length;
  EXPECT_EQ(covered, 40u);  // less than asked, which block_status allows
}
