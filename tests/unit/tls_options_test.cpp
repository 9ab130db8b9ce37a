// The TLS options of `volgate serve` checked together, and PSK files parsed, before anything is
// loaded.
#include "gateway/tls_options.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "crypto/tls_credentials.hpp"

using namespace volgate;
using gateway::TlsOptionsText;

namespace {

std::span<const std::byte> bytes(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

std::string message_of(const TlsOptionsText& text) {
  try {
    gateway::check_tls_options(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST(TlsOptions, Modes) {
  EXPECT_EQ(gateway::parse_tls_mode("off"), nbd::TlsMode::off);
  EXPECT_EQ(gateway::parse_tls_mode("on"), nbd::TlsMode::on);
  EXPECT_EQ(gateway::parse_tls_mode("require"), nbd::TlsMode::require);
  EXPECT_THROW(gateway::parse_tls_mode("yes"), std::invalid_argument);
  EXPECT_THROW(gateway::parse_tls_mode(""), std::invalid_argument);
  EXPECT_THROW(gateway::parse_tls_mode("Require"), std::invalid_argument);
}

TEST(TlsOptions, Combinations) {
  EXPECT_EQ(message_of({}), "accepted");
  EXPECT_EQ(message_of({"require", "/certs", "", false}), "accepted");
  EXPECT_EQ(message_of({"on", "/certs", "", true}), "accepted");
  EXPECT_EQ(message_of({"require", "", "/keys.psk", false}), "accepted");
  EXPECT_EQ(message_of({"off", "/certs", "", false}), "--tls-certificates needs --tls on or --tls require");
  EXPECT_EQ(message_of({"off", "", "/k", false}), "--tls-psk needs --tls on or --tls require");
  EXPECT_EQ(message_of({"off", "", "", true}), "--tls-verify-peer needs --tls on or --tls require");
  EXPECT_EQ(message_of({"require", "", "", false}), "--tls require needs --tls-certificates DIR or --tls-psk FILE");
  EXPECT_EQ(message_of({"on", "/c", "/k", false}), "--tls-certificates and --tls-psk: give one of them, not both");
  EXPECT_EQ(message_of({"on", "", "/k", true}), "--tls-verify-peer needs --tls-certificates DIR");
  EXPECT_EQ(message_of({"maybe", "/c", "", false}), "--tls 'maybe': expected off, on or require");
  auto options = gateway::check_tls_options({"on", "/c", "", true});
  EXPECT_EQ(options.certificates_dir, "/c");
  EXPECT_TRUE(options.verify_peer);
}

TEST(PskKeys, ParsesIdentitiesAndKeys) {
  auto keys = crypto::parse_psk_keys(bytes("alice:00ff10\n\r\nbob:A0b1\r\n\nlast:01"), "keys.psk");
  ASSERT_EQ(keys.size(), 3u);
  const auto& alice = keys.at("alice");
  ASSERT_EQ(alice.size(), 3u);
  EXPECT_EQ(alice.data()[0], std::byte{0x00});
  EXPECT_EQ(alice.data()[1], std::byte{0xff});
  EXPECT_EQ(alice.data()[2], std::byte{0x10});
  EXPECT_EQ(keys.at("bob").data()[0], std::byte{0xa0});
  EXPECT_EQ(keys.at("bob").data()[1], std::byte{0xb1});
  EXPECT_EQ(keys.at("last").size(), 1u);
}

TEST(PskKeys, RefusesBadLinesByNumberWithoutTheKey) {
  auto error_of = [](std::string_view text) -> std::string {
    try {
      crypto::parse_psk_keys(bytes(text), "f.psk");
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_EQ(error_of("a:00\nnocolon"), "f.psk line 2: expected IDENTITY:HEXKEY");
  EXPECT_EQ(error_of(":00"), "f.psk line 1: empty identity");
  EXPECT_EQ(error_of("a:"), "f.psk line 1: the key must be an even number of hex digits");
  EXPECT_EQ(error_of("a:abc"), "f.psk line 1: the key must be an even number of hex digits");
  EXPECT_EQ(error_of("a:secretzz"), "f.psk line 1: the key holds a character that is not a hex digit");
  EXPECT_EQ(error_of("a:00\na:11"), "f.psk line 2: identity 'a' is given twice");
  EXPECT_EQ(error_of("\n\n"), "f.psk: no IDENTITY:HEXKEY line");
  EXPECT_EQ(error_of(""), "f.psk: no IDENTITY:HEXKEY line");
  EXPECT_EQ(error_of("a:" + std::string(1026, '0')), "f.psk line 1: the key is longer than 512 bytes");
}

TEST(TlsCredentials, MissingFilesAreNamed) {
  try {
    crypto::TlsServerCredentials::load({"/nonexistent-dir", "", false});
    FAIL() << "loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "TLS certificates directory /nonexistent-dir: No such file or directory");
  }
  try {
    crypto::TlsServerCredentials::load({"", "/nonexistent.psk", false});
    FAIL() << "loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent.psk"), std::string::npos) << e.what();
  }
}
