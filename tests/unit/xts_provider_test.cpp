// The AES-XTS providers: each gives the known answers, both agree sector by sector through
// XtsCipher, and a provider that computes wrongly is named and never chosen (a wrapped engine
// stands in for the broken implementation: the failure is injected, the providers are real).
#include "crypto/xts_provider.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "crypto/gcrypt_xts.hpp"
#include "crypto/xts_cipher.hpp"

namespace volgate::crypto {
namespace {

XtsEngineFactory factory_of(XtsProvider provider) {
  return [provider](std::span<const std::byte> key, bool encrypting) {
    return make_xts_engine(provider, key, encrypting);
  };
}

// Alters one byte of every output at `at` (from the end when negative).
class AlteringEngine final : public XtsEngine {
 public:
  AlteringEngine(std::unique_ptr<XtsEngine> inner, long at, bool only_decrypting, bool encrypting)
      : inner_(std::move(inner)), at_(at), alter_(!only_decrypting || !encrypting) {}
  bool transform(uint64_t tweak, uint64_t step, size_t unit, const unsigned char* in, unsigned char* out,
                 size_t length) override {
    const bool ok = inner_->transform(tweak, step, unit, in, out, length);
    if (alter_) out[at_ >= 0 ? static_cast<size_t>(at_) : length - static_cast<size_t>(-at_)] ^= 0x80;
    return ok;
  }

 private:
  std::unique_ptr<XtsEngine> inner_;
  long at_;
  bool alter_;
};

XtsEngineFactory altered(XtsProvider provider, long at, bool only_decrypting = false) {
  return [=](std::span<const std::byte> key, bool encrypting) -> std::unique_ptr<XtsEngine> {
    return std::make_unique<AlteringEngine>(make_xts_engine(provider, key, encrypting), at, only_decrypting,
                                            encrypting);
  };
}

class EnvironmentVariable {
 public:
  EnvironmentVariable(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~EnvironmentVariable() { ::unsetenv(name_); }

 private:
  const char* name_;
};

TEST(XtsProvider, NamesRoundTrip) {
  for (XtsProvider p : {XtsProvider::openssl, XtsProvider::gcrypt}) EXPECT_EQ(parse_xts_provider(to_string(p)), p);
  EXPECT_FALSE(parse_xts_provider("auto"));
  EXPECT_FALSE(parse_xts_provider("OpenSSL"));
  EXPECT_NE(provider_version(XtsProvider::gcrypt).find("libgcrypt 1."), std::string::npos);
  EXPECT_NE(provider_version(XtsProvider::openssl).find("OpenSSL 3"), std::string::npos);
}

TEST(XtsProvider, EveryProviderGivesTheKnownAnswers) {
  for (XtsProvider p : {XtsProvider::openssl, XtsProvider::gcrypt})
    EXPECT_EQ(check_known_answers(factory_of(p)), "") << to_string(p);
}

TEST(XtsProvider, AWrongAnswerIsNamedWhereverTheByteIs) {
  EXPECT_EQ(check_known_answers(altered(XtsProvider::gcrypt, 0)),
            "IEEE 1619 vector 4 (AES-128, 512-byte unit): encrypting gives other bytes than the known answer");
  EXPECT_EQ(check_known_answers(altered(XtsProvider::openssl, -1)),
            "IEEE 1619 vector 4 (AES-128, 512-byte unit): encrypting gives other bytes than the known answer");
  EXPECT_EQ(check_known_answers(altered(XtsProvider::gcrypt, 0, true)),
            "IEEE 1619 vector 4 (AES-128, 512-byte unit): decrypting gives other bytes than the plaintext");
  // An engine that cannot even be made is a failure too, not a crash.
  EXPECT_NE(check_known_answers([](std::span<const std::byte>, bool) -> std::unique_ptr<XtsEngine> {
              throw std::runtime_error("no such cipher");
            }).find("no such cipher"),
            std::string::npos);
}

TEST(XtsProvider, BothProvidersAgreeSectorBySectorThroughXtsCipher) {
  std::mt19937_64 random(42);
  for (size_t key_bytes : {32u, 64u}) {
    std::vector<std::byte> key(key_bytes);
    for (auto& b : key) b = static_cast<std::byte>(random());
    for (uint32_t sector : {512u, 4096u}) {
      XtsCipher openssl(key, sector, 7, XtsProvider::openssl);
      XtsCipher gcrypt(key, sector, 7, XtsProvider::gcrypt);
      ASSERT_EQ(gcrypt.provider(), XtsProvider::gcrypt);
      // Small requests stay on this thread, 1 MiB ones are split across the helpers.
      for (size_t length : {size_t{sector}, size_t{64} << 10, size_t{1} << 20}) {
        std::vector<std::byte> plain(length);
        for (auto& b : plain) b = static_cast<std::byte>(random());
        const uint64_t offset = (random() % 4096) * sector;
        std::vector<std::byte> a(length), b(length);
        openssl.encrypt(offset, plain, a.data());
        gcrypt.encrypt(offset, plain, b.data());
        ASSERT_EQ(a, b) << key_bytes << "-byte key, " << sector << "-byte sectors, " << length << " bytes";
        gcrypt.decrypt(offset, a, a.data());
        ASSERT_EQ(a, plain);
      }
    }
  }
}

TEST(XtsProvider, GcryptRefusesWhatOpensslRefuses) {
  EXPECT_THROW(GcryptXts(std::vector<std::byte>(48), true), std::invalid_argument);
  EXPECT_THROW(GcryptXts(std::vector<std::byte>(64, std::byte{7}), true), std::runtime_error);
  EXPECT_THROW(GcryptXts(std::vector<std::byte>(32, std::byte{7}), false), std::runtime_error);
}

TEST(XtsProvider, AProviderThatAnswersWronglyIsNeverChosen) {
  EnvironmentVariable wrong("VOLGATE_TEST_XTS_WRONG", "gcrypt");
  const XtsSelection selection = select_xts_provider(std::nullopt);
  EXPECT_EQ(selection.chosen, XtsProvider::openssl);
  ASSERT_EQ(selection.probes.size(), 2u);
  EXPECT_EQ(selection.probes[1].provider, XtsProvider::gcrypt);
  EXPECT_NE(selection.probes[1].failure.find("other bytes than the known answer"), std::string::npos);
  EXPECT_EQ(default_xts_provider(), XtsProvider::openssl);
  try {
    select_xts_provider(XtsProvider::gcrypt);
    ADD_FAILURE() << "a provider with a wrong answer was accepted when asked for";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("AES-XTS provider gcrypt gave a wrong answer"), std::string::npos) << e.what();
  }
  EXPECT_EQ(default_xts_provider(), XtsProvider::openssl);  // the failed request changed nothing
}

TEST(XtsProvider, AnAskedForProviderIsUsedWithoutASpeedTest) {
  const XtsSelection selection = select_xts_provider(XtsProvider::openssl);
  EXPECT_EQ(selection.chosen, XtsProvider::openssl);
  ASSERT_EQ(selection.probes.size(), 1u);
  EXPECT_EQ(selection.probes[0].gbps_512, 0);
  EXPECT_EQ(default_xts_provider(), XtsProvider::openssl);
  std::vector<std::byte> key(64);
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::byte>(i);
  EXPECT_EQ(XtsCipher(key, 512, 0).provider(), XtsProvider::openssl);
  select_xts_provider(XtsProvider::gcrypt);
  EXPECT_EQ(XtsCipher(key, 512, 0).provider(), XtsProvider::gcrypt);
}

TEST(XtsProvider, SpeedIsMeasuredInCpuTime) {
  const double gbps = measure_xts_speed(factory_of(XtsProvider::openssl), 4096, std::chrono::milliseconds(5));
  EXPECT_GT(gbps, 0.05);  // any AES-NI core does several GB/s; this catches a zero or a unit error
  EXPECT_LT(gbps, 100.0);
}

}  // namespace
}  // namespace volgate::crypto
