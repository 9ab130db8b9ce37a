// Wrapping volume passphrases with the master key (AES-256-GCM).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "controller/domain/key_wrap.hpp"

namespace volgate::controller {
namespace {

crypto::SecureBytes bytes(const std::string& text) {
  crypto::SecureBytes s(text.size());
  std::memcpy(s.data(), text.data(), text.size());
  return s;
}

std::string str(const crypto::SecureBytes& s) { return std::string(s.chars(), s.size()); }

KeyWrap make(char fill) { return KeyWrap(bytes(std::string(32, fill))); }

TEST(KeyWrap, RoundTripsAndNeverStoresTheSecretInTheClear) {
  KeyWrap wrap = make('k');
  auto wrapped = wrap.wrap(bytes("the passphrase"), "vol-1");
  EXPECT_EQ(wrapped.size(), 1 + 12 + 14 + 16u);
  std::string blob(wrapped.begin(), wrapped.end());
  EXPECT_EQ(blob.find("passphrase"), std::string::npos);
  EXPECT_EQ(str(wrap.unwrap(wrapped, "vol-1")), "the passphrase");
  // A fresh nonce every time: wrapping twice gives different blobs.
  EXPECT_NE(wrap.wrap(bytes("the passphrase"), "vol-1"), wrapped);
}

TEST(KeyWrap, RefusesAnotherVolumeAnotherKeyOrAlteredBytes) {
  KeyWrap wrap = make('k');
  auto wrapped = wrap.wrap(bytes("secret"), "vol-1");
  EXPECT_THROW(wrap.unwrap(wrapped, "vol-2"), std::runtime_error);
  EXPECT_THROW(make('x').unwrap(wrapped, "vol-1"), std::runtime_error);
  for (size_t i = 1; i < wrapped.size(); ++i) {
    auto altered = wrapped;
    altered[i] ^= 1;
    EXPECT_THROW(wrap.unwrap(altered, "vol-1"), std::runtime_error) << "byte " << i;
  }
  EXPECT_THROW(wrap.unwrap({1, 2, 3}, "vol-1"), std::runtime_error);
}

TEST(KeyWrap, MasterKeyMustBe32Bytes) {
  EXPECT_THROW(KeyWrap(bytes(std::string(16, 'k'))), std::invalid_argument);
}

TEST(KeyWrap, CreatesAnOwnerOnlyKeyFileAndRefusesToOverwriteIt) {
  auto dir = std::filesystem::temp_directory_path() / ("keywrap-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = dir / "master.key";
  KeyWrap::create_key_file(path);
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  EXPECT_THROW(KeyWrap::create_key_file(path), std::system_error);
  KeyWrap a = KeyWrap::from_file(path);
  KeyWrap b = KeyWrap::from_file(path);
  EXPECT_EQ(str(b.unwrap(a.wrap(bytes("pw"), "v"), "v")), "pw");
  std::ofstream(dir / "short.key") << "too short";
  EXPECT_THROW(KeyWrap::from_file(dir / "short.key"), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(RandomPassphrase, Is256BitsAsHex) {
  auto a = random_passphrase();
  auto b = random_passphrase();
  ASSERT_EQ(a.size(), 64u);
  EXPECT_EQ(str(a).find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(str(a), str(b));
}

}  // namespace
}  // namespace volgate::controller
