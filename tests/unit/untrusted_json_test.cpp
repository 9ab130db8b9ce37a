// Request JSON with its nesting bounded: the limit is exact, and a body deep enough to overflow
// the stack of anything recursive is refused while parsing, without recursion of its own.
#include "common/untrusted_json.hpp"

#include <gtest/gtest.h>

#include <string>

namespace volgate {
namespace {

std::string nested_arrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(UntrustedJson, NestingUpToTheLimitParses) {
  EXPECT_NO_THROW(parse_untrusted_json(nested_arrays(kMaxRequestJsonDepth)));
  EXPECT_NO_THROW(parse_untrusted_json(R"({"volume": {"size": 1, "metadata": {"a": "b"}}})"));
  EXPECT_EQ(parse_untrusted_json("3").get<int>(), 3);
}

TEST(UntrustedJson, OneLevelMoreIsRefused) {
  EXPECT_THROW(parse_untrusted_json(nested_arrays(kMaxRequestJsonDepth + 1)), UntrustedJsonError);
  EXPECT_THROW(parse_untrusted_json(R"({"a": [{"b": 1}]})", 2), UntrustedJsonError);
  EXPECT_NO_THROW(parse_untrusted_json(R"({"a": [1]})", 2));
}

TEST(UntrustedJson, AMillionLevelsAreRefusedWithoutCrashing) {
  try {
    parse_untrusted_json(std::string(1 << 20, '['));
    FAIL() << "accepted";
  } catch (const UntrustedJsonError& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 32"), std::string::npos) << e.what();
  }
}

TEST(UntrustedJson, InvalidJsonSaysSo) {
  for (const char* text : {"", "{", "{\"a\": }", "[1,]", "nul"}) {
    try {
      parse_untrusted_json(text);
      FAIL() << text << " accepted";
    } catch (const UntrustedJsonError& e) {
      EXPECT_EQ(std::string(e.what()), "The request body is not valid JSON.");
    }
  }
}

}  // namespace
}  // namespace volgate
