// volgate doctor's host checks on given inputs: memory, clock, the FUSE device.
#include "controller/doctor/system_checks.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace volgate::controller::doctor {
namespace {

const char* kMeminfo =
    "MemTotal:       24571040 kB\n"
    "MemFree:         1000000 kB\n"
    "MemAvailable:    2097152 kB\n"
    "Buffers:          123456 kB\n";

TEST(SystemChecksTest, AvailableMemoryIsTheLowerOfTheHostsAndTheCgroups) {
  EXPECT_EQ(available_memory_kib(kMeminfo, "", ""), 2097152u);
  EXPECT_EQ(available_memory_kib(kMeminfo, "max\n", "1000\n"), 2097152u);
  // 1 GiB limit, 256 MiB used: 768 MiB left.
  EXPECT_EQ(available_memory_kib(kMeminfo, "1073741824\n", "268435456\n"), 786432u);
  EXPECT_EQ(available_memory_kib(kMeminfo, "8589934592\n", "0\n"), 2097152u);
  EXPECT_EQ(available_memory_kib(kMeminfo, "1000\n", "2000\n"), 0u);  // over its limit already
  EXPECT_EQ(available_memory_kib("MemTotal: 1 kB\n", "", ""), std::nullopt);
  EXPECT_EQ(available_memory_kib("", "", ""), std::nullopt);
}

TEST(SystemChecksTest, PbkdfMemory) {
  auto ok = pbkdf_memory_finding(2097152, kDefaultPbkdfMemoryKib);
  EXPECT_EQ(ok.severity, Severity::ok);
  EXPECT_EQ(ok.what, "2048 MiB available; opening a LUKS2 volume with Argon2 takes up to 1024 MiB");
  auto short_of = pbkdf_memory_finding(786432, kDefaultPbkdfMemoryKib);
  EXPECT_EQ(short_of.severity, Severity::failure);
  EXPECT_NE(short_of.fix.find("--pbkdf-memory"), std::string::npos);
  EXPECT_EQ(pbkdf_memory_finding(786432, 65536).severity, Severity::ok);
  EXPECT_EQ(pbkdf_memory_finding(std::nullopt, 65536).severity, Severity::warning);
  // On this machine: some answer, never a crash.
  EXPECT_NE(check_pbkdf_memory(1024).what, "");
}

TEST(SystemChecksTest, Clock) {
  auto ok = clock_finding(1796083200, true);  // 2026-12-01
  EXPECT_EQ(ok.severity, Severity::ok);
  EXPECT_EQ(ok.what, "the time is 2026-12-01T00:00:00Z");
  EXPECT_EQ(clock_finding(1796083200, false).severity, Severity::warning);
  auto past = clock_finding(946684800, true);  // 2000-01-01
  EXPECT_EQ(past.severity, Severity::failure);
  EXPECT_NE(past.what.find("before this program was written"), std::string::npos);
  EXPECT_NE(past.fix.find("NTP"), std::string::npos);
  EXPECT_NE(check_clock().severity, Severity::failure);  // this machine's clock
}

TEST(SystemChecksTest, Fuse) {
  const auto file = std::filesystem::temp_directory_path() / ("not-fuse-" + std::to_string(::getpid()));
  std::ofstream(file) << "x";
  auto f = check_fuse(true, file);
  EXPECT_EQ(f.severity, Severity::failure);
  EXPECT_EQ(f.what, file.string() + " is not a character device");
  EXPECT_EQ(check_fuse(false, file).severity, Severity::warning);
  std::filesystem::remove(file);
  f = check_fuse(true, file);
  EXPECT_EQ(f.what, file.string() + " does not exist");
  EXPECT_NE(f.fix.find("modprobe fuse"), std::string::npos);
  // The same call on the real device (this machine has one).
  if (std::filesystem::exists("/dev/fuse")) {
    EXPECT_EQ(check_fuse(true).severity, Severity::ok) << check_fuse(true).what;
  }
}

}  // namespace
}  // namespace volgate::controller::doctor
