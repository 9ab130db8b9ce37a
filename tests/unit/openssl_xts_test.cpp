#include "crypto/openssl_xts.hpp"

#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <vector>

namespace volgate::crypto {
namespace {

std::vector<std::byte> random_bytes(std::mt19937_64& random, size_t n) {
  std::vector<std::byte> out(n);
  for (auto& b : out) b = std::byte(random() & 0xff);
  return out;
}

// Leaves the next contexts on the provider's functions, whatever a test did.
struct EvpOnly {
  explicit EvpOnly(bool on) { OpensslXts::use_evp_only_for_testing(on); }
  ~EvpOnly() { OpensslXts::use_evp_only_for_testing(false); }
};

TEST(OpensslXts, CallsTheProvidersFunctionsDirectlyWhenItListsThem) {
  std::mt19937_64 random(1);
  for (size_t key_bytes : {32u, 64u}) {
    const auto key = random_bytes(random, key_bytes);
    EXPECT_TRUE(OpensslXts(key, true).calls_provider_directly()) << key_bytes;
    EvpOnly evp(true);
    EXPECT_FALSE(OpensslXts(key, true).calls_provider_directly()) << key_bytes;
  }
}

// The direct path must give exactly what EVP gives, for every key size, unit size and tweak,
// in place and out of place, and decrypt what it encrypted.
TEST(OpensslXts, DirectPathMatchesEvpForRandomKeysTweaksAndUnits) {
  std::mt19937_64 random(2);
  for (int round = 0; round < 200; ++round) {
    const auto key = random_bytes(random, round % 2 ? 64 : 32);
    const size_t length = 16 * (1 + random() % 256);  // 16 bytes .. 4 KiB
    const auto iv = random_bytes(random, 16);
    const auto plain = random_bytes(random, length);
    auto* iv_bytes = reinterpret_cast<const unsigned char*>(iv.data());
    auto bytes = [](std::vector<std::byte>& v) { return reinterpret_cast<unsigned char*>(v.data()); };

    OpensslXts direct_encrypt(key, true), direct_decrypt(key, false);
    std::vector<std::byte> by_direct(length), by_evp(length);
    ASSERT_TRUE(direct_encrypt.transform_unit(iv_bytes, reinterpret_cast<const unsigned char*>(plain.data()),
                                              bytes(by_direct), length));
    {
      EvpOnly evp(true);
      OpensslXts evp_encrypt(key, true);
      by_evp = plain;
      ASSERT_TRUE(evp_encrypt.transform_unit(iv_bytes, bytes(by_evp), bytes(by_evp), length));
    }
    ASSERT_EQ(by_direct, by_evp) << "round " << round << ", " << length << " bytes";
    ASSERT_NE(by_direct, plain);
    ASSERT_TRUE(direct_decrypt.transform_unit(iv_bytes, bytes(by_direct), bytes(by_direct), length));
    ASSERT_EQ(by_direct, plain) << "round " << round;
  }
}

TEST(OpensslXts, RefusesKeysWithEqualHalvesAndOddLengthsOnBothPaths) {
  const std::vector<std::byte> equal_halves(64, std::byte{0x42});
  for (bool evp_only : {false, true}) {
    EvpOnly evp(evp_only);
    EXPECT_THROW(OpensslXts(equal_halves, true), std::runtime_error) << evp_only;
    EXPECT_THROW(OpensslXts(equal_halves, false), std::runtime_error) << evp_only;
    EXPECT_THROW(OpensslXts(std::vector<std::byte>(48, std::byte{1}), true), std::invalid_argument);
  }
}

}  // namespace
}  // namespace volgate::crypto
