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

TEST(UntrustedJson, AKeyTwiceInOneObjectIsRefused) {
  for (const char* text : {R"({"target": {"backend": "memory"}, "target": {"backend": "file"}})",
                           R"({"a": [{"x": 1, "y": 2, "x": 3}]})", R"({"a": {"b": {"c": 1, "c": 1}}})"}) {
    try {
      parse_untrusted_json(text);
      FAIL() << text << " accepted";
    } catch (const UntrustedJsonError& e) {
      EXPECT_NE(std::string(e.what()).find("twice in one object"), std::string::npos) << e.what();
    }
  }
}

// The message quotes the key: escaped, so that a long key with multi-byte characters cut short
// cannot make the message invalid UTF-8 (answers made from it must serialise).
TEST(UntrustedJson, TheDuplicateKeyIsQuotedAsValidText) {
  const std::string key = std::string(63, 'a') + "\xc3\xa9" + std::string(100, 'b');
  try {
    parse_untrusted_json("{\"" + key + "\": 1, \"" + key + "\": 2}");
    FAIL() << "accepted";
  } catch (const UntrustedJsonError& e) {
    const std::string message = e.what();
    EXPECT_NO_THROW((void)nlohmann::json(message).dump()) << message;
    EXPECT_LT(message.size(), 120u) << message;
    for (unsigned char c : message) EXPECT_LT(c, 0x80) << message;
  }
}

TEST(UntrustedJson, TheSameKeyInDifferentObjectsIsFine) {
  const auto value = parse_untrusted_json(R"({"a": {"name": 1}, "b": {"name": 2}, "c": [{"name": 3}, {"name": 4}], "name": 5})");
  EXPECT_EQ(value["c"][1]["name"], 4);
  EXPECT_EQ(value["name"], 5);
}

TEST(UntrustedJson, ObjectsWithManyKeysParse) {
  std::string text = "{";
  for (int i = 0; i < 3000; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\": " + std::to_string(i);
  text += "}";
  EXPECT_EQ(parse_untrusted_json(text).size(), 3000u);
}

}  // namespace
}  // namespace volgate
