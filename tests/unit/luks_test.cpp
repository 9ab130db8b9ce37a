// LuksContainer and LuksDevice on a MemoryDevice: a device with no path, so these run the
// in-memory header copy that RBD and iSCSI volumes need.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>

#include "backends/device_front.hpp"
#include "backends/memory_device.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "device_sync.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::crypto {
namespace {

using testing::DeviceSync;
using testing::ForwardsToMemory;
using testing::pattern;

SecureBytes secret(const std::string& text) {
  SecureBytes s(text.size());
  std::memcpy(s.data(), text.data(), text.size());
  return s;
}

LuksFormatOptions quick(const std::string& type, uint32_t sector) {
  LuksFormatOptions o;
  o.type = type;
  o.sector_size = sector;
  o.pbkdf = "pbkdf2";
  o.pbkdf_iterations = 1000;  // the minimum: no timing benchmark
  return o;
}

class LuksTest : public ::testing::TestWithParam<std::pair<std::string, uint32_t>> {
 protected:
  std::shared_ptr<backends::MemoryDevice> base = std::make_shared<backends::MemoryDevice>(32 << 20, false);
  DeviceSync io;
};

TEST_P(LuksTest, FormatThenLoadUnlockAndServeTheDecryptedPayload) {
  auto [type, sector] = GetParam();
  auto formatted = LuksContainer::format(*base, quick(type, sector), secret("pw"));
  const LuksInfo& info = formatted.info();
  EXPECT_EQ(info.version, type == "luks2" ? "LUKS2" : "LUKS1");
  EXPECT_EQ(info.cipher, "aes-xts-plain64");
  EXPECT_EQ(info.key_bits, 512u);
  EXPECT_EQ(info.sector_size, sector);
  EXPECT_EQ(info.payload_size, base->size() - info.data_offset);
  EXPECT_TRUE(info.unsupported.empty()) << info.unsupported;
  ASSERT_EQ(info.keyslots.size(), 1u);

  // The header is on the device now: a fresh load sees the same container.
  auto loaded = LuksContainer::load(*base);
  EXPECT_EQ(loaded.info().uuid, info.uuid);
  // With a fixed keyslot cost libcryptsetup gives the digest its minimum too.
  EXPECT_EQ(loaded.info().digest_iterations, 1000u);
  std::vector<std::byte> header_before(info.data_offset);
  ASSERT_FALSE(io.read(*base, 0, header_before));

  LuksDevice device(base, loaded.unlock(secret("pw")));
  EXPECT_EQ(device.size(), info.payload_size);
  EXPECT_EQ(device.capabilities().min_block_size, sector);
  auto data = pattern(64 * 1024, 3);
  ASSERT_FALSE(io.write(device, 8192, data));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(io.read(device, 8192, back));
  EXPECT_EQ(back, data);

  // What reached the base is ciphertext, after the header, and the header is untouched.
  std::vector<std::byte> raw(data.size());
  ASSERT_FALSE(io.read(*base, info.data_offset + 8192, raw));
  EXPECT_NE(raw, data);
  std::vector<std::byte> header_after(info.data_offset);
  ASSERT_FALSE(io.read(*base, 0, header_after));
  EXPECT_EQ(header_after, header_before);
}

// The controller's path: the volume key itself, checked against the header's digest, opens
// the same payload as the passphrase; any other key, or one of the wrong size, is refused.
TEST_P(LuksTest, UnlockWithTheVolumeKeyServesTheSamePayloadAndRefusesAnyOtherKey) {
  auto [type, sector] = GetParam();
  LuksContainer::format(*base, quick(type, sector), secret("pw"));
  auto by_passphrase = LuksContainer::load(*base).unlock(secret("pw"));
  SecureBytes key(by_passphrase.volume_key.size());
  std::memcpy(key.data(), by_passphrase.volume_key.data(), key.size());
  LuksDevice reference(base, std::move(by_passphrase));
  auto data = pattern(16 * 1024, 9);
  ASSERT_FALSE(io.write(reference, 4096 * 3, data));

  SecureBytes wrong(key.size());
  std::memcpy(wrong.data(), key.data(), key.size());
  wrong.data()[7] ^= std::byte{1};
  try {
    LuksContainer::load(*base).unlock_with_volume_key(std::move(wrong));
    ADD_FAILURE() << "a wrong volume key was accepted";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::wrong_volume_key);
  }
  SecureBytes short_key(32);
  std::memcpy(short_key.data(), key.data(), 32);
  try {
    LuksContainer::load(*base).unlock_with_volume_key(std::move(short_key));
    ADD_FAILURE() << "a 256-bit key was accepted for a 512-bit container";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::wrong_volume_key);
    EXPECT_NE(std::string(e.what()).find("256 bits"), std::string::npos) << e.what();
  }

  auto unlocked = LuksContainer::load(*base).unlock_with_volume_key(std::move(key));
  EXPECT_EQ(unlocked.keyslot, -1);
  EXPECT_EQ(unlocked.volume_key.size(), 64u);
  LuksDevice device(base, std::move(unlocked));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(io.read(device, 4096 * 3, back));
  EXPECT_EQ(back, data);
}

INSTANTIATE_TEST_SUITE_P(Formats, LuksTest,
                         ::testing::Values(std::pair<std::string, uint32_t>{"luks2", 4096},
                                           std::pair<std::string, uint32_t>{"luks2", 512},
                                           std::pair<std::string, uint32_t>{"luks1", 512}));

class LuksDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LuksContainer::format(*base, quick("luks2", 4096), secret("pw"));
    device = std::make_unique<LuksDevice>(base, LuksContainer::load(*base).unlock(secret("pw")));
  }
  std::shared_ptr<backends::MemoryDevice> base = std::make_shared<backends::MemoryDevice>(32 << 20, false);
  std::unique_ptr<LuksDevice> device;
  DeviceSync io;
};

// Through the front, as every front-end goes: the sector size is the minimum block size.
TEST_F(LuksDeviceTest, RefusesMisalignedAndOutOfRangeRequests) {
  backends::DeviceFront front(*device);
  EXPECT_EQ(front.capabilities().min_block_size, 4096u);
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(io.read(front, 512, buf).value(), EINVAL);
  std::vector<std::byte> small(512);
  EXPECT_EQ(io.write(front, 0, small).value(), EINVAL);
  EXPECT_EQ(io.write(front, device->size(), buf).value(), ENOSPC);
  EXPECT_EQ(io.read(front, device->size() - 4096, buf).value(), 0);
}

// Zeroes on LUKS are ciphertext: the device leaves them to the front, which writes them.
TEST_F(LuksDeviceTest, WriteZeroesReadsBackAsZeroesAndIsNeverFast) {
  EXPECT_FALSE(device->capabilities().can_zero);
  EXPECT_EQ(io.run([&](auto done) { device->write_zeroes(0, 4096, {}, done); }).value(), ENOTSUP);
  backends::DeviceFront front(*device);
  EXPECT_TRUE(front.capabilities().can_zero);
  EXPECT_FALSE(front.capabilities().can_fast_zero);
  auto data = pattern(3 << 20, 9);
  ASSERT_FALSE(io.write(*device, 0, data));
  EXPECT_FALSE(io.run([&](auto done) { front.write_zeroes(4096, (2 << 20) + 8192, {}, done); }));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(io.read(*device, 0, back));
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 4096, data.begin()));
  EXPECT_TRUE(testing::all_zero({back.begin() + 4096, back.begin() + 4096 + (2 << 20) + 8192}));
  EXPECT_TRUE(std::equal(back.begin() + 4096 + (2 << 20) + 8192, back.end(),
                         data.begin() + 4096 + (2 << 20) + 8192));
  EXPECT_EQ(io.run([&](auto done) { front.write_zeroes(0, 4096, {.fast_only = true}, done); }).value(),
            ENOTSUP);
}

TEST_F(LuksDeviceTest, LargeZeroesAreCipheredOnAHelperNotOnTheCallersThread) {
  // The memory base completes writes inline, so a cipher run on the caller's thread would
  // complete the request before write_zeroes returns.
  backends::DeviceFront front(*device);
  bool returned = false;
  bool completed_before_return = false;
  EXPECT_FALSE(io.run([&](auto done) {
    front.write_zeroes(0, 1 << 20, {}, [&, done](std::error_code ec) {
      completed_before_return = !returned;
      done(ec);
    });
    returned = true;
  }));
  EXPECT_FALSE(completed_before_return);
  std::vector<std::byte> back(1 << 20);
  ASSERT_FALSE(io.read(*device, 0, back));
  EXPECT_TRUE(testing::all_zero(back));
}

TEST_F(LuksDeviceTest, HolesAreNeverReportedAsZeroes) {
  auto [ec, extents] = io.block_status(*device, 0, device->size());
  ASSERT_FALSE(ec);
  ASSERT_FALSE(extents.empty());
  for (const auto& e : extents) EXPECT_FALSE(e.zero);
}

TEST(LuksContainer, WrongPassphraseAndKeyslotLifecycle) {
  auto base = std::make_shared<backends::MemoryDevice>(32 << 20, false);
  DeviceSync io;
  LuksContainer::format(*base, quick("luks2", 4096), secret("one"));
  auto container = LuksContainer::load(*base);
  try {
    container.unlock(secret("two"));
    FAIL() << "a wrong passphrase unlocked";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::wrong_passphrase);
  }
  LuksFormatOptions kdf = quick("luks2", 4096);
  EXPECT_THROW(container.add_key(secret("bad"), secret("two"), kdf), LuksError);
  EXPECT_EQ(container.add_key(secret("one"), secret("two"), kdf), 1);
  auto reloaded = LuksContainer::load(*base);  // the new keyslot was written back
  EXPECT_EQ(reloaded.info().keyslots.size(), 2u);
  auto k1 = reloaded.unlock(secret("one"));
  auto k2 = reloaded.unlock(secret("two"));
  ASSERT_EQ(k1.volume_key.size(), k2.volume_key.size());
  EXPECT_EQ(std::memcmp(k1.volume_key.data(), k2.volume_key.data(), k1.volume_key.size()), 0);
  EXPECT_EQ(reloaded.remove_key(secret("one")), 0);
  auto after = LuksContainer::load(*base);
  EXPECT_THROW(after.unlock(secret("one")), LuksError);
  EXPECT_NO_THROW(after.unlock(secret("two")));
  try {
    after.remove_key(secret("two"));
    FAIL() << "the last keyslot was removed";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::invalid);
  }
}

// Fails every write after the first `good_writes` once armed, to inject storage errors under
// LuksDevice.
class FailingWrites final : public ForwardsToMemory {
 public:
  FailingWrites(uint64_t size, int good_writes) : ForwardsToMemory(size), good_(good_writes) {}
  void write(uint64_t o, std::span<const std::byte> d, backends::WriteFlags f,
             backends::Completion done) override {
    if (armed) ++writes;
    if (armed && good_-- <= 0) return done(backends::errno_code(EIO));
    memory_.write(o, d, f, std::move(done));
  }
  bool armed = false;
  int writes = 0;  // since armed

 private:
  int good_;
};

// The front writes LUKS zeroes as 1 MiB writes, one after the other.
TEST(LuksDevice, WriteZeroesStopsAtTheFirstFailedChunk) {
  auto base = std::make_shared<FailingWrites>(32 << 20, 2);
  DeviceSync io;
  LuksContainer::format(*base, quick("luks2", 4096), secret("pw"));
  LuksDevice device(base, LuksContainer::load(*base).unlock(secret("pw")));
  backends::DeviceFront front(device);
  base->armed = true;
  // Five 1 MiB pieces; the third write fails, inline, inside the front's loop.
  EXPECT_EQ(io.run([&](auto done) { front.write_zeroes(0, 5 << 20, {}, done); }).value(), EIO);
  EXPECT_EQ(base->writes, 3);
}

// A memory device whose cache (read_cached/write_cached) holds only `budget` more bytes: past
// that it moves part of a call and then nothing, as a page cache with missing pages would.
class PartlyCached final : public ForwardsToMemory {
 public:
  PartlyCached(uint64_t size, uint64_t budget) : ForwardsToMemory(size), budget_(budget) {}
  backends::DeviceCapabilities capabilities() const override {
    auto caps = memory_.capabilities();
    caps.can_read_cached = caps.can_write_cached = true;
    caps.min_block_size = 512;  // the normal path refuses what a sector device would
    return caps;
  }
  void read(uint64_t o, std::span<std::byte> d, backends::Completion done) override {
    ++plain_calls;
    if (o % 512 || d.size() % 512) return done(backends::errno_code(EINVAL));
    memory_.read(o, d, std::move(done));
  }
  void write(uint64_t o, std::span<const std::byte> d, backends::WriteFlags f,
             backends::Completion done) override {
    ++plain_calls;
    if (o % 512 || d.size() % 512) return done(backends::errno_code(EINVAL));
    memory_.write(o, d, f, std::move(done));
  }
  // MemoryDevice completes inline on any thread, so these may call it from a helper.
  uint64_t read_cached(uint64_t o, std::span<std::byte> d) override {
    auto n = take(d.size());
    if (n) memory_.read(o, d.first(n), [](std::error_code) {});
    return n;
  }
  uint64_t write_cached(uint64_t o, std::span<const std::byte> d) override {
    auto n = take(d.size());
    if (n) memory_.write(o, d.first(n), {}, [](std::error_code) {});
    return n;
  }
  void refill(uint64_t budget) {
    budget_ = budget;
    cached_calls = plain_calls = 0;
  }
  std::atomic<int> cached_calls{0};
  std::atomic<int> plain_calls{0};

 private:
  uint64_t take(uint64_t wanted) {
    ++cached_calls;
    uint64_t n = std::min(wanted, budget_.load());
    budget_ -= n;
    return n;
  }
  std::atomic<uint64_t> budget_;
};

// The helper's cached path (whole, partial, unaligned, empty; requests that are and are not
// multiples of its 64 KiB pieces) must write the same ciphertext and read the same plaintext
// as the plain path through read()/write(), and hand the base only whole sectors.
class LuksCachedTest : public ::testing::TestWithParam<std::pair<std::string, uint32_t>> {};

TEST_P(LuksCachedTest, CachedTransfersMatchThePlainPathWhereverTheCacheRunsOut) {
  constexpr uint64_t kSize = 48 << 20;
  constexpr uint64_t kAll = uint64_t{1} << 40;
  auto reference = std::make_shared<backends::MemoryDevice>(kSize, false);
  DeviceSync io;
  LuksContainer::format(*reference, quick(GetParam().first, GetParam().second), secret("pw"));
  const uint64_t data_offset = LuksContainer::load(*reference).info().data_offset;
  std::vector<std::byte> header(data_offset);
  ASSERT_FALSE(io.read(*reference, 0, header));
  LuksDevice plain(reference, LuksContainer::load(*reference).unlock(secret("pw")));

  // Budgets: none, part of the first piece (not sector-aligned), a few pieces, all of it.
  for (uint64_t size : {uint64_t{132} << 10, uint64_t{1} << 20, (uint64_t{1} << 20) + 4096}) {
    for (uint64_t budget : {uint64_t{0}, uint64_t{1000}, uint64_t{200 * 1024 + 77}, kAll}) {
      SCOPED_TRACE("request " + std::to_string(size) + ", cache budget " + std::to_string(budget));
      auto base = std::make_shared<PartlyCached>(kSize, 0);
      ASSERT_FALSE(io.write(*base, 0, header));  // the same container, so the same volume key
      LuksDevice device(base, LuksContainer::load(*base).unlock(secret("pw")));
      const auto data = pattern(size, static_cast<uint8_t>(budget + size));
      const uint64_t at = 3 << 20;
      const int plain_calls = budget >= size ? 0 : 1;  // the rest, in one call

      base->refill(budget);
      ASSERT_FALSE(io.write(device, at, data));
      EXPECT_GT(base->cached_calls.load(), 0);
      EXPECT_EQ(base->plain_calls.load(), plain_calls);
      ASSERT_FALSE(io.write(plain, at, data));
      std::vector<std::byte> ciphertext(size), expected(size);
      ASSERT_FALSE(io.read(*base, data_offset + at, ciphertext));
      ASSERT_FALSE(io.read(*reference, data_offset + at, expected));
      EXPECT_TRUE(ciphertext == expected) << "ciphertext differs from the plain path's";

      base->refill(budget);
      std::vector<std::byte> back(size);
      ASSERT_FALSE(io.read(device, at, back));
      EXPECT_TRUE(back == data) << "read back differs";
      EXPECT_GT(base->cached_calls.load(), 0);
      EXPECT_EQ(base->plain_calls.load(), plain_calls);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, LuksCachedTest,
                         ::testing::Values(std::make_pair(std::string("luks1"), 512u),
                                           std::make_pair(std::string("luks2"), 4096u)));

TEST(LuksDevice, DurableWritesAndSmallRequestsSkipTheCachedPath) {
  auto base = std::make_shared<PartlyCached>(32 << 20, uint64_t{1} << 40);
  DeviceSync io;
  LuksContainer::format(*base, quick("luks2", 4096), secret("pw"));
  LuksDevice device(base, LuksContainer::load(*base).unlock(secret("pw")));
  EXPECT_FALSE(device.capabilities().can_read_cached);  // its cache holds ciphertext
  EXPECT_FALSE(device.capabilities().can_write_cached);
  const auto data = pattern(1 << 20, 5);
  ASSERT_FALSE(io.write(device, 0, data, /*fua=*/true));
  ASSERT_FALSE(io.write(device, 0, pattern(64 * 1024, 6)));
  std::vector<std::byte> small(64 * 1024);
  ASSERT_FALSE(io.read(device, 0, small));
  EXPECT_EQ(base->cached_calls.load(), 0);
  EXPECT_TRUE(small == pattern(64 * 1024, 6));
}

TEST(LuksContainer, ADamagedHeaderIsNotMistakenForNoHeader) {
  auto base = std::make_shared<backends::MemoryDevice>(32 << 20, false);
  DeviceSync io;
  LuksContainer::format(*base, quick("luks2", 4096), secret("pw"));
  // Garble the JSON areas of both header copies, keeping their binary headers and magic.
  std::vector<std::byte> junk(8192, std::byte{0x7b});
  ASSERT_FALSE(io.write(*base, 4096, junk));
  ASSERT_FALSE(io.write(*base, 16384 + 4096, junk));
  try {
    LuksContainer::load(*base);
    FAIL() << "a damaged header loaded";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::invalid) << e.what();
  }
}

TEST(LuksContainer, NotLuksAndTooSmall) {
  auto blank = std::make_shared<backends::MemoryDevice>(8 << 20, false);
  try {
    LuksContainer::load(*blank);
    FAIL() << "a blank device loaded";
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::not_luks);
  }
  // LUKS2's default 16 MiB header does not fit on 8 MiB.
  EXPECT_THROW(LuksContainer::format(*blank, quick("luks2", 4096), secret("pw")), LuksError);
  // LUKS1 does not do 4096-byte sectors.
  EXPECT_THROW(LuksContainer::format(*blank, quick("luks1", 4096), secret("pw")), LuksError);
}

}  // namespace
}  // namespace volgate::crypto
