#include "backends/memory_device.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "backends/device_front.hpp"
#include "device_sync.hpp"

using volgate::backends::DeviceFront;
using volgate::backends::MemoryDevice;
using namespace volgate::testing;

namespace {
constexpr uint64_t kPage = MemoryDevice::kPageSize;
}

TEST(MemoryDevice, ReadsZeroesWhenEmpty) {
  MemoryDevice d(1 << 30, false);
  DeviceSync sync;
  std::vector<std::byte> out(12345, std::byte{0xff});
  ASSERT_FALSE(sync.read(d, 777, out));
  EXPECT_TRUE(all_zero(out));
  EXPECT_EQ(d.allocated_bytes(), 0u);
}

TEST(MemoryDevice, WriteReadAcrossPages) {
  MemoryDevice d(16 << 20, false);
  DeviceSync sync;
  auto data = pattern(3 * kPage + 17, 5);
  ASSERT_FALSE(sync.write(d, kPage - 9, data));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(sync.read(d, kPage - 9, back));
  EXPECT_EQ(back, data);
  EXPECT_EQ(d.allocated_bytes(), 5 * kPage);
}

TEST(MemoryDevice, TrimFreesWholePagesAndZeroesPartial) {
  MemoryDevice d(16 << 20, false);
  DeviceSync sync;
  const auto data = pattern(4 * kPage, 1);
  ASSERT_FALSE(sync.write(d, 0, data));
  ASSERT_EQ(d.allocated_bytes(), 4 * kPage);
  ASSERT_FALSE(sync.run([&](auto done) { d.trim(kPage / 2, 2 * kPage, done); }));
  // Page 1 is covered whole and freed; pages 0 and 2 are partly zeroed and kept.
  EXPECT_EQ(d.allocated_bytes(), 3 * kPage);
  std::vector<std::byte> back(2 * kPage);
  ASSERT_FALSE(sync.read(d, kPage / 2, back));
  EXPECT_TRUE(all_zero(back));
  std::vector<std::byte> head(kPage / 2);
  ASSERT_FALSE(sync.read(d, 0, head));
  EXPECT_EQ(head, std::vector<std::byte>(data.begin(), data.begin() + kPage / 2));
}

TEST(MemoryDevice, WriteZeroesNoHoleKeepsAllocation) {
  MemoryDevice d(16 << 20, false);
  DeviceSync sync;
  ASSERT_FALSE(sync.run([&](auto done) { d.write_zeroes(0, 2 * kPage, {.may_trim = false}, done); }));
  EXPECT_EQ(d.allocated_bytes(), 2 * kPage);
  ASSERT_FALSE(sync.run([&](auto done) { d.write_zeroes(0, 2 * kPage, {.may_trim = true}, done); }));
  EXPECT_EQ(d.allocated_bytes(), 0u);
}

TEST(MemoryDevice, BlockStatusMergesRuns) {
  MemoryDevice d(1 << 20, false);
  DeviceSync sync;
  ASSERT_FALSE(sync.write(d, 2 * kPage, pattern(2 * kPage, 3)));
  auto [ec, extents] = sync.block_status(d, 0, 1 << 20);
  ASSERT_FALSE(ec);
  ASSERT_EQ(extents.size(), 3u);
  EXPECT_EQ(extents[0].length, 2 * kPage);
  EXPECT_TRUE(extents[0].hole && extents[0].zero);
  EXPECT_EQ(extents[1].length, 2 * kPage);
  EXPECT_FALSE(extents[1].hole);
  EXPECT_EQ(extents[2].length, (1 << 20) - 4 * kPage);
  EXPECT_TRUE(extents[2].hole);
}

// Through the front, as every front-end goes: the device itself checks nothing.
TEST(MemoryDevice, RefusesOutOfRangeAndReadOnly) {
  MemoryDevice d(1 << 20, false);
  DeviceFront front(d);
  DeviceSync sync;
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(sync.read(front, (1 << 20) - 100, buf).value(), EINVAL);
  EXPECT_EQ(sync.write(front, (1 << 20) - 100, buf).value(), ENOSPC);
  EXPECT_EQ(sync.run([&](auto done) { front.trim(UINT64_MAX - 10, 100, {}, done); }).value(), EINVAL);

  MemoryDevice ro(1 << 20, true);
  DeviceFront ro_front(ro);
  EXPECT_EQ(sync.write(ro_front, 0, buf).value(), EPERM);
  EXPECT_EQ(sync.run([&](auto done) { ro_front.trim(0, 4096, {}, done); }).value(), EPERM);
  EXPECT_TRUE(ro.capabilities().read_only);
  EXPECT_FALSE(ro.capabilities().can_trim);
}

TEST(MemoryDevice, RejectsBadSizes) {
  EXPECT_THROW(MemoryDevice(0, false), std::invalid_argument);
  EXPECT_THROW(MemoryDevice(MemoryDevice::kMaxSize + 1, false), std::invalid_argument);
  MemoryDevice big(MemoryDevice::kMaxSize, false);  // sparse: costs only the directory
  DeviceSync sync;
  ASSERT_FALSE(sync.write(big, MemoryDevice::kMaxSize - 4096, pattern(4096, 9)));
  EXPECT_EQ(big.allocated_bytes(), kPage);
}

// Concurrent writers, readers and trimmers on overlapping pages: run under TSan/ASan this
// proves pages are never freed under a copy.
TEST(MemoryDevice, ConcurrentWriteTrimRead) {
  MemoryDevice d(4 * kPage, false);
  auto worker = [&](int role) {
    DeviceSync sync;
    auto data = pattern(kPage, static_cast<uint8_t>(role));
    std::vector<std::byte> buf(kPage);
    for (int i = 0; i < 2000; ++i) {
      uint64_t offset = (i % 4) * kPage;
      std::error_code ec;
      if (role == 0) ec = sync.write(d, offset, data);
      if (role == 1) ec = sync.run([&](auto done) { d.trim(offset, kPage, done); });
      if (role == 2) ec = sync.read(d, offset, buf);
      EXPECT_FALSE(ec);
    }
  };
  std::thread a(worker, 0), b(worker, 1), c(worker, 2);
  a.join();
  b.join();
  c.join();
}
