#include "common/size.hpp"

#include <gtest/gtest.h>

using volgate::format_size;
using volgate::parse_size;

TEST(ParseSize, PlainBytes) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("512B"), 512u);
}

TEST(ParseSize, BinarySuffixes) {
  EXPECT_EQ(parse_size("1K"), 1024u);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("4G"), 4ull << 30);
  EXPECT_EQ(parse_size("4g"), 4ull << 30);
  EXPECT_EQ(parse_size("1T"), 1ull << 40);
  EXPECT_EQ(parse_size("10GiB"), 10ull << 30);
  EXPECT_EQ(parse_size("10GB"), 10ull << 30);
  EXPECT_EQ(parse_size("2P"), 2ull << 50);
}

TEST(ParseSize, RejectsMalformed) {
  for (const char* bad : {"", "G", "-1", "1.5G", "1Q", "1GiBs", "1 G", "0x10", "1BB", "1iB",
                          "99999999999999999999", "16777216T"})
    EXPECT_FALSE(parse_size(bad).has_value()) << bad;
}

TEST(FormatSize, Compact) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(4096), "4 KiB");
  EXPECT_EQ(format_size(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(format_size(1ull << 40), "1 TiB");
}
