#include "crypto/secure_bytes.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace volgate::crypto {
namespace {

std::string temp_path(const char* name) {
  return std::string(::testing::TempDir()) + "/" + name + std::to_string(::getpid());
}

TEST(ReadKeyFile, ReadsEveryByteIncludingNewlinesAndNuls) {
  std::string path = temp_path("key");
  std::string content("pass\0word\n", 10);
  std::ofstream(path, std::ios::binary) << content;
  auto key = read_key_file(path);
  EXPECT_EQ(std::string(key.chars(), key.size()), content);
  std::remove(path.c_str());
}

TEST(ReadKeyFile, ErrorsNameTheFileButNotTheContent) {
  std::string path = temp_path("empty");
  std::ofstream(path).close();
  try {
    read_key_file(path);
    FAIL() << "an empty key file was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos);
  }
  std::remove(path.c_str());
  EXPECT_THROW(read_key_file(temp_path("missing")), std::runtime_error);
}

TEST(ReadKeyFile, RefusesFilesOverEightMiB) {
  std::string path = temp_path("huge");
  { std::ofstream(path, std::ios::binary) << std::string(kMaxKeyFileSize + 1, 'x'); }
  EXPECT_THROW(read_key_file(path), std::runtime_error);
  std::remove(path.c_str());
}

TEST(SecureBytes, MovesOwnershipAndShrinks) {
  SecureBytes a(100);
  std::memset(a.data(), 'k', a.size());
  SecureBytes b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.size(), 100u);
  b.shrink(10);
  EXPECT_EQ(b.size(), 10u);
  EXPECT_EQ(b.chars()[9], 'k');
  EXPECT_EQ(b.data()[10], std::byte{0});  // wiped past the new size
}

}  // namespace
}  // namespace volgate::crypto
