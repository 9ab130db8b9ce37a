// The API's tokens: digests only, each naming a project and a role.
#include "controller/api/token_table.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace volgate::controller {
namespace {

TEST(TokenTableTest, FindsWhoATokenIs) {
  TokenTable table;
  table.add(TokenTable::digest_of("alpha-token-0123456789"), {.project = "alpha", .role = Role::member});
  table.add(TokenTable::digest_of("operator-token-0123456789"), {.project = "default", .role = Role::admin});
  auto alice = table.find("alpha-token-0123456789");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->project, "alpha");
  EXPECT_FALSE(alice->admin());
  auto op = table.find("operator-token-0123456789");
  ASSERT_TRUE(op);
  EXPECT_TRUE(op->admin());
  EXPECT_EQ(table.size(), 2u);
  // Close is not enough.
  EXPECT_FALSE(table.find("alpha-token-012345678"));
  EXPECT_FALSE(table.find("alpha-token-01234567890"));
  EXPECT_FALSE(table.find(""));
}

TEST(TokenTableTest, DigestsFromHex) {
  // sha256("abc"), as sha256sum prints it.
  const char* hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  auto digest = TokenTable::digest_from_hex(hex);
  ASSERT_TRUE(digest);
  EXPECT_EQ(*digest, TokenTable::digest_of("abc"));
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(TokenTable::digest_from_hex(upper), digest);
  EXPECT_FALSE(TokenTable::digest_from_hex(std::string(hex).substr(1)));
  EXPECT_FALSE(TokenTable::digest_from_hex(std::string(hex) + "0"));
  EXPECT_FALSE(TokenTable::digest_from_hex(std::string(63, '0') + "g"));
  EXPECT_FALSE(TokenTable::digest_from_hex(""));

  TokenTable table;
  table.add(*digest, {.project = "p", .role = Role::member});
  EXPECT_TRUE(table.find("abc"));
}

TEST(TokenTableTest, OneTokenCannotGrantTwice) {
  TokenTable table;
  table.add(TokenTable::digest_of("same-token-0123456789"), {.project = "alpha", .role = Role::member});
  EXPECT_THROW(table.add(TokenTable::digest_of("same-token-0123456789"), {.project = "beta", .role = Role::admin}),
               std::invalid_argument);
  EXPECT_EQ(table.find("same-token-0123456789")->project, "alpha");
}

}  // namespace
}  // namespace volgate::controller
