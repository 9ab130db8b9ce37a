#include "backends/read_modify_write_device.hpp"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <cstring>
#include <vector>

#include "backends/device_front.hpp"
#include "common/current_context.hpp"
#include "device_sync.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::backends {
namespace {

using testing::all_zero;
using testing::DeviceSync;
using testing::pattern;

constexpr uint32_t kBlock = 4096;

// A memory device that takes only whole 4 KiB blocks (as LUKS does: anything else is EINVAL,
// and counted) and completes every call later, from the io_context, as network and O_DIRECT
// storage do: requests then really overlap.
class BlockOnlyDevice : public testing::ForwardsToMemory {
 public:
  explicit BlockOnlyDevice(uint64_t size) : ForwardsToMemory(size) {}
  DeviceCapabilities capabilities() const override {
    auto caps = memory_.capabilities();
    caps.min_block_size = kBlock;
    return caps;
  }
  void read(uint64_t o, std::span<std::byte> d, Completion done) override {
    if (!aligned(o, d.size())) return done(errno_code(EINVAL));
    later([=, this] { memory_.read(o, d, done); });
  }
  void write(uint64_t o, std::span<const std::byte> d, WriteFlags f, Completion done) override {
    if (!aligned(o, d.size())) return done(errno_code(EINVAL));
    ++writes;
    later([=, this] { memory_.write(o, d, f, done); });
  }
  void trim(uint64_t o, uint64_t l, Completion done) override {
    if (!aligned(o, l)) return done(errno_code(EINVAL));
    trimmed.push_back({o, l});
    later([=, this] { memory_.trim(o, l, done); });
  }
  void write_zeroes(uint64_t o, uint64_t l, ZeroFlags f, Completion done) override {
    if (!aligned(o, l)) return done(errno_code(EINVAL));
    zeroed.push_back({o, l});
    later([=, this] { memory_.write_zeroes(o, l, f, done); });
  }
  void block_status(uint64_t o, uint64_t l, ExtentsCompletion done) override {
    if (!aligned(o, l)) return done(errno_code(EINVAL), {});
    later([=, this] { memory_.block_status(o, l, done); });
  }

  int misaligned = 0;
  int writes = 0;
  std::vector<std::pair<uint64_t, uint64_t>> trimmed, zeroed;

 private:
  bool aligned(uint64_t o, uint64_t l) {
    const bool ok = o % kBlock == 0 && l % kBlock == 0;
    misaligned += !ok;
    return ok;
  }
  // Two hops through the io_context: a read and a write of different requests interleave.
  void later(std::function<void()> work) {
    auto& io = current_io_context();
    boost::asio::post(io, [&io, work = std::move(work)] { boost::asio::post(io, work); });
  }
};

struct ReadModifyWriteDeviceTest : ::testing::Test {
  std::shared_ptr<BlockOnlyDevice> base = std::make_shared<BlockOnlyDevice>(32 * kBlock);  // two memory pages
  ReadModifyWriteDevice device{base};
  DeviceSync sync;

  std::vector<std::byte> contents() {
    std::vector<std::byte> all(base->size());
    EXPECT_FALSE(sync.read(*base, 0, all));
    return all;
  }
};

TEST_F(ReadModifyWriteDeviceTest, OverOnlyWrapsDevicesThatNeedAlignment) {
  auto memory = std::make_shared<MemoryDevice>(kBlock, false);
  EXPECT_EQ(ReadModifyWriteDevice::over(memory), memory);
  EXPECT_NE(ReadModifyWriteDevice::over(base), base);
  EXPECT_EQ(device.capabilities().min_block_size, 1u);
}

TEST_F(ReadModifyWriteDeviceTest, UnalignedWritesAndReadsKeepTheBytesAround) {
  auto before = pattern(base->size(), 7);
  ASSERT_FALSE(sync.write(*base, 0, before));
  auto data = pattern(10000, 99);
  ASSERT_FALSE(sync.write(device, 3000, data));  // from inside block 0 to inside block 3
  auto expected = before;
  std::memcpy(expected.data() + 3000, data.data(), data.size());
  EXPECT_EQ(contents(), expected);
  std::vector<std::byte> back(777);
  ASSERT_FALSE(sync.read(device, 5001, back));
  EXPECT_EQ(0, std::memcmp(back.data(), expected.data() + 5001, back.size()));
  EXPECT_EQ(base->misaligned, 0);
}

TEST_F(ReadModifyWriteDeviceTest, ConcurrentWritesIntoOneBlockBothSurvive) {
  // Sixteen 256-byte writes into the same block, all in flight at once: each read-modify-write
  // would otherwise write back the block as it was before the others.
  std::vector<std::vector<std::byte>> pieces;
  int done = 0;
  for (int i = 0; i < 16; ++i) pieces.push_back(pattern(256, static_cast<uint8_t>(i + 1)));
  for (int i = 0; i < 16; ++i)
    device.write(kBlock + i * 256, pieces[i], {}, [&](std::error_code ec) {
      EXPECT_FALSE(ec);
      ++done;
    });
  sync.io().restart();
  sync.io().run();
  ASSERT_EQ(done, 16);
  auto all = contents();
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(0, std::memcmp(all.data() + kBlock + i * 256, pieces[i].data(), 256)) << "piece " << i;
}

TEST_F(ReadModifyWriteDeviceTest, AnAlignedWriteWaitsForAReadModifyWriteOfItsBlock) {
  auto patch = pattern(100, 1);
  auto whole = pattern(kBlock, 2);
  int done = 0;
  device.write(kBlock + 50, patch, {}, [&](std::error_code ec) {
    EXPECT_FALSE(ec);
    ++done;
  });
  device.write(kBlock, whole, {}, [&](std::error_code ec) {
    EXPECT_FALSE(ec);
    ++done;
  });
  sync.io().restart();
  sync.io().run();
  ASSERT_EQ(done, 2);
  // The aligned write was issued last and must not be undone by the patch's write-back.
  auto all = contents();
  EXPECT_EQ(0, std::memcmp(all.data() + kBlock, whole.data(), kBlock));
}

TEST_F(ReadModifyWriteDeviceTest, ZeroesPartialBlocksByPatchingAndWholeOnesInTheBase) {
  auto before = pattern(base->size(), 3);
  ASSERT_FALSE(sync.write(*base, 0, before));
  ASSERT_FALSE(sync.run([&](auto done) { device.write_zeroes(1000, 3 * kBlock, {}, done); }));
  auto expected = before;
  std::memset(expected.data() + 1000, 0, 3 * kBlock);
  EXPECT_EQ(contents(), expected);
  ASSERT_EQ(base->zeroed.size(), 1u);  // blocks 1 and 2 whole; 0 and 3 patched
  EXPECT_EQ(base->zeroed[0], std::make_pair(uint64_t{kBlock}, uint64_t{2 * kBlock}));
  // Inside one block: a patch only.
  ASSERT_FALSE(sync.run([&](auto done) { device.write_zeroes(9 * kBlock + 10, 20, {}, done); }));
  std::memset(expected.data() + 9 * kBlock + 10, 0, 20);
  EXPECT_EQ(contents(), expected);
  EXPECT_EQ(base->zeroed.size(), 1u);
  EXPECT_EQ(base->misaligned, 0);
}

TEST_F(ReadModifyWriteDeviceTest, TrimsOnlyWholeBlocks) {
  ASSERT_FALSE(sync.run([&](auto done) { device.trim(100, 3 * kBlock, done); }));
  ASSERT_EQ(base->trimmed.size(), 1u);
  EXPECT_EQ(base->trimmed[0], std::make_pair(uint64_t{kBlock}, uint64_t{2 * kBlock}));
  ASSERT_FALSE(sync.run([&](auto done) { device.trim(5 * kBlock + 1, 100, done); }));
  EXPECT_EQ(base->trimmed.size(), 1u);  // no whole block: nothing to deallocate
}

TEST_F(ReadModifyWriteDeviceTest, BlockStatusIsCutToTheRangeAsked) {
  // The memory device allocates 64 KiB pages: the first is a hole, the second data.
  ASSERT_FALSE(sync.write(*base, 16 * kBlock, pattern(kBlock, 1)));
  auto [ec, extents] = sync.block_status(device, 15 * kBlock + 100, kBlock + 200);
  ASSERT_FALSE(ec);
  uint64_t total = 0;
  for (const auto& e : extents) total += e.length;
  EXPECT_EQ(total, kBlock + 200u);
  ASSERT_GE(extents.size(), 2u);
  EXPECT_TRUE(extents[0].hole);
  EXPECT_EQ(extents[0].length, kBlock - 100u);
  EXPECT_FALSE(extents[1].hole);
  EXPECT_EQ(base->misaligned, 0);
}

TEST_F(ReadModifyWriteDeviceTest, OutOfRangeIsRefusedByTheFront) {
  DeviceFront front(device);
  EXPECT_EQ(front.capabilities().min_block_size, 1u);  // any byte range
  std::vector<std::byte> one(1);
  EXPECT_EQ(sync.write(front, base->size(), one).value(), ENOSPC);
  EXPECT_EQ(sync.read(front, base->size(), one).value(), EINVAL);
  EXPECT_TRUE(all_zero(contents()));
}

}  // namespace
}  // namespace volgate::backends
