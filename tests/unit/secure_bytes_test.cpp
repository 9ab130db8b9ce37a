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

// Kilobytes of memory this process has locked (VmLck in /proc/self/status).
long locked_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmLck:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// A short passphrase holds one page of locked memory, not a buffer for the largest key file:
// that one (8 MiB and a page) is over the 8 MiB RLIMIT_MEMLOCK of an unprivileged user, so for
// them the key was never locked at all.
TEST(ReadKeyFile, AShortKeyLocksOnePage) {
  std::string path = temp_path("short");
  std::ofstream(path, std::ios::binary) << "correct horse";
  const long before = locked_kib();
  ASSERT_GE(before, 0) << "no VmLck in /proc/self/status";
  auto key = read_key_file(path);
  EXPECT_EQ(std::string(key.chars(), key.size()), "correct horse");
  EXPECT_LE(locked_kib() - before, ::sysconf(_SC_PAGESIZE) / 1024);
  std::remove(path.c_str());
}

TEST(ReadKeyFile, KeysLargerThanAPageAndUpToTheLimitAreReadWhole) {
  for (size_t size : {size_t{4096}, size_t{4097}, size_t{100000}, kMaxKeyFileSize}) {
    std::string path = temp_path("large");
    std::string content(size, '\0');
    for (size_t i = 0; i < size; ++i) content[i] = static_cast<char>(i * 7 + i / 251);
    { std::ofstream(path, std::ios::binary) << content; }
    auto key = read_key_file(path);
    EXPECT_EQ(key.size(), size);
    EXPECT_TRUE(std::string(key.chars(), key.size()) == content) << size << " bytes read differently";
    std::remove(path.c_str());
  }
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
