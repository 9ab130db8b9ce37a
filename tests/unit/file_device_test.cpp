#include "backends/file_device.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "backends/device_front.hpp"
#include "common/buffer_pool.hpp"
#include "device_sync.hpp"

using volgate::backends::DeviceFront;
using volgate::backends::FileDevice;
using namespace volgate::testing;
namespace fs = std::filesystem;

namespace {

class FileDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/volgate-file-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/disk.img";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<FileDevice> create(uint64_t size, bool direct = false) {
    return FileDevice::open({.path = path_, .direct = direct, .create_size = size});
  }
  uint64_t allocated_bytes() {
    struct stat st {};
    ::stat(path_.c_str(), &st);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  std::string dir_;
  std::string path_;
  DeviceSync sync_;
};

}  // namespace

TEST_F(FileDeviceTest, CreatesSparseFileOfRequestedSize) {
  auto d = create(64 << 20);
  EXPECT_EQ(d->size(), 64u << 20);
  EXPECT_EQ(fs::file_size(path_), 64u << 20);
  EXPECT_LT(allocated_bytes(), 1u << 20);
}

TEST_F(FileDeviceTest, WriteReadRoundTripAtOddOffsets) {
  auto d = create(8 << 20);
  auto data = pattern(300001, 7);
  ASSERT_FALSE(sync_.write(*d, 4097, data));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(sync_.read(*d, 4097, back));
  EXPECT_EQ(back, data);
  // And the bytes really are in the file.
  std::ifstream f(path_, std::ios::binary);
  f.seekg(4097);
  std::vector<char> raw(data.size());
  f.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  EXPECT_EQ(0, std::memcmp(raw.data(), data.data(), data.size()));
}

TEST_F(FileDeviceTest, FuaAndFlushSucceed) {
  auto d = create(1 << 20);
  ASSERT_FALSE(sync_.write(*d, 0, pattern(4096, 1), /*fua=*/true));
  ASSERT_FALSE(sync_.run([&](auto done) { d->flush(done); }));
}

TEST_F(FileDeviceTest, TrimPunchesHolesAndBlockStatusSeesThem) {
  auto d = create(4 << 20);
  ASSERT_FALSE(sync_.write(*d, 0, pattern(4 << 20, 3)));
  ASSERT_FALSE(sync_.run([&](auto done) { d->trim(1 << 20, 2 << 20, done); }));
  std::vector<std::byte> back(2 << 20);
  ASSERT_FALSE(sync_.read(*d, 1 << 20, back));
  EXPECT_TRUE(all_zero(back));

  auto [ec, extents] = sync_.block_status(*d, 0, 4 << 20);
  ASSERT_FALSE(ec);
  ASSERT_EQ(extents.size(), 3u);
  EXPECT_FALSE(extents[0].hole);
  EXPECT_EQ(extents[0].length, 1u << 20);
  EXPECT_TRUE(extents[1].hole && extents[1].zero);
  EXPECT_EQ(extents[1].length, 2u << 20);
  EXPECT_FALSE(extents[2].hole);
}

TEST_F(FileDeviceTest, WriteZeroesWithAndWithoutHoles) {
  auto d = create(4 << 20);
  ASSERT_FALSE(sync_.write(*d, 0, pattern(4 << 20, 4)));
  uint64_t full = allocated_bytes();
  ASSERT_FALSE(sync_.run([&](auto done) { d->write_zeroes(0, 1 << 20, {.may_trim = false}, done); }));
  EXPECT_EQ(allocated_bytes(), full);  // NO_HOLE keeps the blocks
  ASSERT_FALSE(sync_.run([&](auto done) {
    d->write_zeroes(1 << 20, 1 << 20, {.may_trim = true, .fast_only = true, .fua = true}, done);
  }));
  EXPECT_LT(allocated_bytes(), full);
  std::vector<std::byte> back(2 << 20);
  ASSERT_FALSE(sync_.read(*d, 0, back));
  EXPECT_TRUE(all_zero(back));
}

TEST_F(FileDeviceTest, DirectIoRoundTrip) {
  auto d = create(1 << 20, /*direct=*/true);
  EXPECT_EQ(d->capabilities().min_block_size, FileDevice::kDirectAlignment);
  volgate::Buffer buf = volgate::Buffer::allocate(8192);
  auto data = pattern(8192, 9);
  std::memcpy(buf.data(), data.data(), data.size());
  ASSERT_FALSE(sync_.run([&](auto done) { d->write(8192, buf.span(), {}, done); }));
  volgate::Buffer back = volgate::Buffer::allocate(8192);
  ASSERT_FALSE(sync_.run([&](auto done) { d->read(8192, back.span(), done); }));
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), data.size()));
}

// Through the front, as every front-end goes: the device itself checks nothing.
TEST_F(FileDeviceTest, RangeAndReadOnlyErrors) {
  create(1 << 20);
  auto ro = FileDevice::open({.path = path_, .read_only = true});
  DeviceFront front(*ro);
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(sync_.write(front, 0, buf).value(), EPERM);
  EXPECT_EQ(sync_.read(front, (1 << 20) - 1, buf).value(), EINVAL);
  EXPECT_TRUE(ro->capabilities().read_only);
  EXPECT_FALSE(sync_.run([&](auto done) { front.flush(done); }));
}

// read_cached/write_cached run on whatever thread calls them (LUKS helpers), with no io_context.
// The file is under /tmp: a disk filesystem on most hosts (so RWF_NOWAIT), tmpfs on some.
TEST_F(FileDeviceTest, CachedTransfersWorkFromAnyThread) {
  auto d = create(4 << 20);
  ASSERT_TRUE(d->capabilities().can_read_cached);
  const auto before = pattern(1 << 20, 4);
  ASSERT_FALSE(sync_.write(*d, 0, before));  // allocated and in the page cache
  const auto data = pattern(300001, 3);
  std::vector<std::byte> back(data.size());
  uint64_t written = 0, read = 0;
  std::thread([&] {
    // A disk filesystem may refuse buffered writes that must not wait (ext4 does), or take
    // only part: the caller's write() does the rest.
    written = d->write_cached(12345, data);
    read = d->read_cached(12345, back);
  }).join();
  EXPECT_LE(written, data.size());
  EXPECT_EQ(read, data.size());  // what was just written is in the page cache
  std::vector<std::byte> expected(before.begin() + 12345, before.begin() + 12345 + data.size());
  std::copy(data.begin(), data.begin() + static_cast<ptrdiff_t>(written), expected.begin());
  EXPECT_EQ(back, expected);

  std::vector<std::byte> some(8192);
  auto ro = FileDevice::open({.path = path_, .read_only = true});
  EXPECT_FALSE(ro->capabilities().can_write_cached);
  EXPECT_EQ(ro->read_cached(12345, back), back.size());
  auto direct = FileDevice::open({.path = path_, .direct = true});
  EXPECT_FALSE(direct->capabilities().can_read_cached);
  EXPECT_FALSE(direct->capabilities().can_write_cached);
  EXPECT_EQ(direct->read_cached(0, some), 0u);
}

// On tmpfs there is no device to wait for: cached transfers move everything, holes included.
TEST_F(FileDeviceTest, CachedTransfersOnTmpfsMoveEverything) {
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string path = "/dev/shm/volgate-file-device-test-" + std::to_string(getpid());
  struct Remove {
    std::string path;
    ~Remove() { fs::remove(path); }
  } remove{path};
  auto d = FileDevice::open({.path = path, .create_size = 4 << 20});
  const auto data = pattern(300001, 8);
  std::vector<std::byte> back(data.size());
  uint64_t written = 0, read = 0;
  std::thread([&] {
    written = d->write_cached(777, data);
    read = d->read_cached(777, back);
  }).join();
  EXPECT_EQ(written, data.size());
  EXPECT_EQ(read, data.size());
  EXPECT_EQ(back, data);
}

TEST_F(FileDeviceTest, OpenErrorsNameThePath) {
  try {
    FileDevice::open({.path = dir_ + "/missing.img"});
    FAIL() << "opened a missing file";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.img"), std::string::npos);
    EXPECT_EQ(e.code().value(), ENOENT);
  }
  create(1 << 20);
  EXPECT_THROW(FileDevice::open({.path = path_, .create_size = 4096}), std::invalid_argument);
  EXPECT_THROW(FileDevice::open({.path = dir_}), std::exception);  // a directory
  std::ofstream(dir_ + "/empty.img").close();
  EXPECT_THROW(FileDevice::open({.path = dir_ + "/empty.img"}), std::invalid_argument);
  std::ofstream(dir_ + "/odd.img") << "12345";
  EXPECT_THROW(FileDevice::open({.path = dir_ + "/odd.img", .direct = true}), std::invalid_argument);
}

TEST_F(FileDeviceTest, GrowsExistingFile) {
  create(1 << 20);
  auto d = create(2 << 20);
  EXPECT_EQ(d->size(), 2u << 20);
}

TEST_F(FileDeviceTest, ManyConcurrentRequestsOnOneRing) {
  auto d = create(16 << 20);
  // More requests than ring entries at once, all completing on this thread.
  constexpr int kRequests = 1000;
  std::vector<std::vector<std::byte>> blocks;
  for (int i = 0; i < kRequests; ++i) blocks.push_back(pattern(4096, static_cast<uint8_t>(i)));
  int completed = 0;
  for (int i = 0; i < kRequests; ++i)
    d->write(uint64_t(i) * 4096, blocks[i], {}, [&](std::error_code ec) {
      EXPECT_FALSE(ec);
      ++completed;
    });
  sync_.io().restart();
  sync_.io().run();
  EXPECT_EQ(completed, kRequests);
  std::vector<std::byte> back(4096);
  ASSERT_FALSE(sync_.read(*d, 777 * 4096, back));
  EXPECT_EQ(back, blocks[777]);
}
