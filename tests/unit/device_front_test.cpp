#include "backends/device_front.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "counted_allocations.hpp"
#include "device_sync.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::backends {
namespace {

using testing::DeviceSync;

// A memory device that records what reaches it and can be told to lack things.
class Recording final : public testing::ForwardsToMemory {
 public:
  explicit Recording(uint64_t size) : ForwardsToMemory(size) {}
  DeviceCapabilities caps = memory_.capabilities();
  bool zero_answers_enotsup = false;
  std::vector<std::string> calls;

  DeviceCapabilities capabilities() const override { return caps; }
  void read(uint64_t o, std::span<std::byte> d, Completion done) override {
    calls.push_back("read");
    ForwardsToMemory::read(o, d, std::move(done));
  }
  void write(uint64_t o, std::span<const std::byte> d, WriteFlags f, Completion done) override {
    calls.push_back(std::string("write ") + std::to_string(d.size()) + (f.fua ? " fua" : ""));
    ForwardsToMemory::write(o, d, f, std::move(done));
  }
  void flush(Completion done) override {
    calls.push_back("flush");
    ForwardsToMemory::flush(std::move(done));
  }
  void trim(uint64_t o, uint64_t l, Completion done) override {
    calls.push_back("trim");
    ForwardsToMemory::trim(o, l, std::move(done));
  }
  void write_zeroes(uint64_t o, uint64_t l, ZeroFlags f, Completion done) override {
    calls.push_back(std::string("zero") + (f.fua ? " fua" : ""));
    if (zero_answers_enotsup) return done(errno_code(ENOTSUP));
    ForwardsToMemory::write_zeroes(o, l, f, std::move(done));
  }
  void block_status(uint64_t o, uint64_t l, ExtentsCompletion done) override {
    calls.push_back("block_status");
    ForwardsToMemory::block_status(o, l, std::move(done));
  }
};

constexpr uint64_t kSize = 8 << 20;

TEST(DeviceFront, RefusesBeforeTheDeviceSeesAnything) {
  Recording device(kSize);
  device.caps.min_block_size = 512;
  DeviceFront front(device);
  DeviceSync io;
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(io.read(front, kSize - 512, buf).value(), EINVAL);      // past the end
  EXPECT_EQ(io.write(front, kSize - 512, buf).value(), ENOSPC);     // a write past the end
  EXPECT_EQ(io.read(front, 100, buf).value(), EINVAL);              // not aligned
  std::vector<std::byte> odd(1000);
  EXPECT_EQ(io.write(front, 0, odd).value(), EINVAL);
  EXPECT_EQ(io.run([&](auto done) { front.write_zeroes(kSize, 512, {}, done); }).value(), ENOSPC);
  EXPECT_EQ(io.run([&](auto done) { front.trim(UINT64_MAX - 511, 512, {}, done); }).value(), EINVAL);
  EXPECT_EQ(io.block_status(front, 0, 0).first.value(), EINVAL);
  EXPECT_EQ(io.block_status(front, kSize, 512).first.value(), EINVAL);
  EXPECT_TRUE(device.calls.empty());
  EXPECT_EQ(io.read(front, kSize - 4096, buf).value(), 0);  // the last block is fine
  EXPECT_EQ(device.calls.size(), 1u);

  Recording read_only(kSize);
  read_only.caps.read_only = true;
  DeviceFront ro(read_only);
  EXPECT_FALSE(ro.capabilities().can_zero);
  EXPECT_FALSE(ro.capabilities().can_fua);
  EXPECT_EQ(io.write(ro, 0, buf).value(), EPERM);
  EXPECT_EQ(io.write(ro, kSize, buf).value(), EPERM);  // read-only is said first
  EXPECT_EQ(io.run([&](auto done) { ro.trim(0, 4096, {}, done); }).value(), EPERM);
  EXPECT_EQ(io.run([&](auto done) { ro.write_zeroes(0, 4096, {}, done); }).value(), EPERM);
  EXPECT_FALSE(io.flush(ro));  // nothing to make durable
  EXPECT_TRUE(read_only.calls.empty());
}

TEST(DeviceFront, ZeroesAreWrittenAsDataWhereTheDeviceHasNoWay) {
  Recording device(kSize);
  device.caps.can_zero = device.caps.can_fast_zero = false;
  DeviceFront front(device);
  EXPECT_TRUE(front.capabilities().can_zero);
  EXPECT_FALSE(front.capabilities().can_fast_zero);
  DeviceSync io;
  std::vector<std::byte> ones(kSize, std::byte{1});
  ASSERT_FALSE(io.write(device, 0, ones));
  device.calls.clear();

  EXPECT_EQ(io.run([&](auto done) { front.write_zeroes(0, 4096, {.fast_only = true}, done); }).value(), ENOTSUP);
  EXPECT_TRUE(device.calls.empty());
  // 2.5 MiB from 4 KiB: three pieces, one flush at the end for FUA.
  const uint64_t length = (5 << 19);
  EXPECT_FALSE(io.run([&](auto done) { front.write_zeroes(4096, length, {.fua = true}, done); }));
  EXPECT_EQ(device.calls, (std::vector<std::string>{"write 1048576", "write 1048576", "write 524288", "flush"}));
  std::vector<std::byte> back(kSize);
  ASSERT_FALSE(io.read(device, 0, back));
  EXPECT_EQ(back[4095], std::byte{1});
  EXPECT_TRUE(testing::all_zero({back.begin() + 4096, back.begin() + 4096 + static_cast<ptrdiff_t>(length)}));
  EXPECT_EQ(back[4096 + length], std::byte{1});
}

TEST(DeviceFront, ADeviceThatFindsItCannotZeroGetsThemWritten) {
  Recording device(kSize);
  device.zero_answers_enotsup = true;
  DeviceFront front(device);
  DeviceSync io;
  std::vector<std::byte> ones(8192, std::byte{1});
  ASSERT_FALSE(io.write(device, 0, ones));
  device.calls.clear();
  EXPECT_FALSE(io.run([&](auto done) { front.write_zeroes(0, 8192, {.fua = true}, done); }));
  EXPECT_EQ(device.calls, (std::vector<std::string>{"zero fua", "write 8192", "flush"}));
  std::vector<std::byte> back(8192);
  ASSERT_FALSE(io.read(device, 0, back));
  EXPECT_TRUE(testing::all_zero(back));
  // Asked for fast zeroes only, its ENOTSUP is the answer.
  device.calls.clear();
  EXPECT_EQ(io.run([&](auto done) { front.write_zeroes(0, 8192, {.fast_only = true}, done); }).value(), ENOTSUP);
  EXPECT_EQ(device.calls, (std::vector<std::string>{"zero"}));
}

TEST(DeviceFront, FuaIsAFlushAfterTheWriteWhereTheDeviceHasNone) {
  Recording device(kSize);
  device.caps.can_fua = false;
  DeviceFront front(device);
  EXPECT_TRUE(front.capabilities().can_fua);
  DeviceSync io;
  std::vector<std::byte> buf(4096, std::byte{7});
  EXPECT_FALSE(io.write(front, 0, buf, /*fua=*/true));
  EXPECT_FALSE(io.write(front, 4096, buf));
  EXPECT_EQ(device.calls, (std::vector<std::string>{"write 4096", "flush", "write 4096"}));

  Recording writes_through(kSize);  // no FUA, and no flush either: nothing to wait for
  writes_through.caps.can_fua = writes_through.caps.can_flush = false;
  DeviceFront through(writes_through);
  EXPECT_FALSE(io.write(through, 0, buf, /*fua=*/true));
  EXPECT_FALSE(io.flush(through));
  EXPECT_EQ(writes_through.calls, (std::vector<std::string>{"write 4096"}));

  Recording native(kSize);
  DeviceFront native_front(native);
  EXPECT_FALSE(io.write(native_front, 0, buf, /*fua=*/true));
  EXPECT_EQ(native.calls, (std::vector<std::string>{"write 4096 fua"}));
}

TEST(DeviceFront, WhatTheDeviceLacksIsAnsweredHere) {
  Recording device(kSize);
  device.caps.can_trim = device.caps.can_block_status = device.caps.can_cache = false;
  DeviceFront front(device);
  DeviceSync io;
  EXPECT_FALSE(io.run([&](auto done) { front.trim(0, 4096, {.fua = true}, done); }));  // a hint
  EXPECT_FALSE(io.run([&](auto done) { front.cache(0, 4096, done); }));
  auto [ec, extents] = io.block_status(front, 4096, 8192);
  EXPECT_FALSE(ec);
  ASSERT_EQ(extents.size(), 1u);
  EXPECT_EQ(extents[0].length, 8192u);
  EXPECT_FALSE(extents[0].hole || extents[0].zero);  // all data: always a true answer
  EXPECT_TRUE(device.calls.empty());

  Recording trims(kSize);
  DeviceFront trim_front(trims);
  EXPECT_FALSE(io.run([&](auto done) { trim_front.trim(0, 4096, {.fua = true}, done); }));
  EXPECT_EQ(trims.calls, (std::vector<std::string>{"trim", "flush"}));
}

// A device whose size can be changed, as a volume that is extended.
class Growing final : public testing::ForwardsToMemory {
 public:
  using ForwardsToMemory::ForwardsToMemory;
  uint64_t size() const override { return visible; }
  uint64_t visible = 1 << 20;
};

TEST(DeviceFront, KeepsItsSizeUntilToldToFollowTheDevice) {
  Growing device(kSize);
  DeviceFront front(device);
  device.visible = 2 << 20;
  EXPECT_EQ(front.size(), 1u << 20);  // an NBD connection keeps the size it was given
  EXPECT_EQ(front.refusal(DeviceRequest::read, 1 << 20, 4096), EINVAL);
  front.refresh_size();  // the FUSE file follows the volume
  EXPECT_EQ(front.size(), 2u << 20);
  EXPECT_EQ(front.refusal(DeviceRequest::read, 1 << 20, 4096), 0);
}

// The data path's promise: once warm, a request through LUKS (and the front) over a device
// that completes in memory allocates nothing: every layer's state comes from its per-thread
// pool, every buffer from the buffer pool. The 1 MiB requests do their cipher work on a helper
// thread (and the memory device takes them there, through its cache calls); allocations on
// the helper count as well.
TEST(DeviceFront, ARequestThroughLuksAllocatesNothingOnceWarm) {
  auto base = std::make_shared<MemoryDevice>(32 << 20, false);
  crypto::LuksFormatOptions options;
  options.type = "luks2";
  options.sector_size = 4096;
  options.pbkdf = "pbkdf2";
  options.pbkdf_iterations = 1000;  // the minimum: no timing benchmark
  crypto::SecureBytes passphrase(2);
  std::memcpy(passphrase.data(), "pw", 2);
  crypto::LuksContainer::format(*base, options, passphrase);
  crypto::LuksDevice luks(base, crypto::LuksContainer::load(*base).unlock(passphrase));
  DeviceFront front(luks);
  DeviceSync io;
  std::vector<std::byte> data(64 * 1024, std::byte{3});
  std::vector<std::byte> back(data.size());
  const std::vector<std::byte> large = testing::pattern(1 << 20, 7);
  std::vector<std::byte> large_back(large.size());
  auto round = [&] {
    EXPECT_FALSE(io.write(front, 8192, data));
    EXPECT_FALSE(io.read(front, 8192, back));
    EXPECT_FALSE(io.write(front, 4096, std::span<const std::byte>(data).first(4096), /*fua=*/true));
    EXPECT_FALSE(io.write(front, 4 << 20, large));
    EXPECT_FALSE(io.read(front, 4 << 20, large_back));
    EXPECT_FALSE(io.write(front, 8 << 20, large, /*fua=*/true));  // encrypted on the helper only
  };
  const uint64_t cold = allocations.load();
  for (int i = 0; i < 3; ++i) round();  // warm: pools filled, OpenSSL's contexts made
  const uint64_t before = allocations.load();
  EXPECT_GT(before, cold);  // the count works: warming up allocated
  for (int i = 0; i < 100; ++i) round();
  EXPECT_EQ(allocations.load() - before, 0u);
  EXPECT_EQ(back, data);
  EXPECT_EQ(large_back, large);
}

}  // namespace
}  // namespace volgate::backends
