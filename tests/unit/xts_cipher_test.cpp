#include "crypto/xts_cipher.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace volgate::crypto {
namespace {

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(std::byte(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string to_hex(std::span<const std::byte> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out += digits[std::to_integer<int>(b) >> 4];
    out += digits[std::to_integer<int>(b) & 15];
  }
  return out;
}

// IEEE 1619 (XTS-AES) test vector 4: AES-128 keys, data unit 0, 512 bytes 00 01 .. ff twice.
const auto kKey = from_hex("27182818284590452353602874713526"
                           "31415926535897932384626433832795");

std::vector<std::byte> counting_sector() {
  std::vector<std::byte> v(512);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::byte(i & 0xff);
  return v;
}

TEST(XtsCipher, MatchesIeee1619Vector4) {
  XtsCipher cipher(kKey, 512, 0);
  auto data = counting_sector();
  cipher.encrypt(0, data, data.data());
  EXPECT_EQ(to_hex({data.data(), 32}), "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c");
  EXPECT_EQ(to_hex({data.data() + 496, 16}), "0a282df920147beabe421ee5319d0568");
  cipher.decrypt(0, data, data.data());
  EXPECT_EQ(data, counting_sector());
}

TEST(XtsCipher, TweakCountsFiveTwelveByteSectorsFromTheSegmentPlusIvOffset) {
  // Data unit 1 (checked against python3-cryptography): offset 512, or offset 0 with iv_offset 1.
  const std::string unit1 = "bbf9d6a74a7465fee20f42adf9a623fc954f3b55587e8e429eec6f71e738a390";
  auto a = counting_sector();
  XtsCipher(kKey, 512, 0).encrypt(512, a, a.data());
  EXPECT_EQ(to_hex({a.data(), 32}), unit1);
  auto b = counting_sector();
  XtsCipher(kKey, 512, 1).encrypt(0, b, b.data());
  EXPECT_EQ(a, b);
}

TEST(XtsCipher, FourKiBSectorsAdvanceTheTweakByEight) {
  // The second 4096-byte unit has tweak 8 (512-byte sectors), not 1.
  XtsCipher large(kKey, 4096, 0);
  std::vector<std::byte> two(8192);
  for (size_t i = 0; i < two.size(); ++i) two[i] = std::byte(i * 7);
  std::vector<std::byte> second(two.begin() + 4096, two.end());
  large.encrypt(0, two, two.data());
  XtsCipher(kKey, 4096, 8).encrypt(0, second, second.data());
  EXPECT_TRUE(std::equal(second.begin(), second.end(), two.begin() + 4096));
}

TEST(XtsCipher, EncryptsOutOfPlaceWithoutTouchingTheInput) {
  XtsCipher cipher(kKey, 512, 0);
  const auto plain = counting_sector();
  std::vector<std::byte> out(512);
  cipher.encrypt(0, plain, out.data());
  EXPECT_EQ(plain, counting_sector());
  EXPECT_NE(out, plain);
}

TEST(XtsCipher, RejectsBadKeysSectorsAndAlignment) {
  EXPECT_THROW(XtsCipher(from_hex("00112233"), 512, 0), std::invalid_argument);
  EXPECT_THROW(XtsCipher(kKey, 520, 0), std::invalid_argument);
  XtsCipher cipher(kKey, 4096, 0);
  std::vector<std::byte> data(4096);
  EXPECT_THROW(cipher.encrypt(512, data, data.data()), std::invalid_argument);
  std::vector<std::byte> short_data(512);
  EXPECT_THROW(cipher.decrypt(0, short_data, short_data.data()), std::invalid_argument);
}

TEST(XtsCipher, LargeRequestsSplitAcrossCoresMatchSectorBySector) {
  for (uint32_t sector : {512u, 4096u}) {
    XtsCipher cipher(kKey, sector, 3);
    std::vector<std::byte> whole(1 << 20);
    for (size_t i = 0; i < whole.size(); ++i) whole[i] = std::byte(i * 13 + (i >> 12));
    std::vector<std::byte> piecewise = whole;
    cipher.encrypt(1 << 20, whole, whole.data());
    for (size_t at = 0; at < piecewise.size(); at += sector)
      cipher.encrypt((1 << 20) + at, {piecewise.data() + at, sector}, piecewise.data() + at);
    EXPECT_EQ(whole, piecewise) << "sector size " << sector;
  }
}

TEST(XtsCipher, ManyThreadsAtOnceGetTheSameResult) {
  XtsCipher cipher(kKey, 512, 0);
  auto expected = counting_sector();
  cipher.encrypt(4096, expected, expected.data());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto data = counting_sector();
        cipher.encrypt(4096, data, data.data());
        if (data != expected) ++mismatches;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace volgate::crypto
