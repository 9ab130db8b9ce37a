// LuksContainer::load on headers crafted to make it read much or to point outside the device:
// it reads only the header and keyslot areas that locate_luks_areas finds, and refuses offsets
// and sizes that make no sense with an error naming the field.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "backends/memory_device.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "crypto/luks_layout.hpp"
#include "device_sync.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::crypto {
namespace {

using testing::DeviceSync;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kGiB = 1024 * kMiB;

SecureBytes secret(const std::string& text) {
  SecureBytes s(text.size());
  std::memcpy(s.data(), text.data(), text.size());
  return s;
}

LuksFormatOptions quick(const std::string& type) {
  LuksFormatOptions o;
  o.type = type;
  o.sector_size = 512;
  o.pbkdf = "pbkdf2";
  o.pbkdf_iterations = 1000;  // the minimum: no timing benchmark
  return o;
}

// A memory device that counts the bytes read from it, and fails every read once more than
// `budget` bytes were read: a load that copies far too much then fails at once, instead of
// first taking a gigabyte of memory.
class CountingReads final : public testing::ForwardsToMemory {
 public:
  CountingReads(uint64_t size, uint64_t budget) : ForwardsToMemory(size), budget_(budget) {}
  void read(uint64_t o, std::span<std::byte> d, backends::Completion done) override {
    bytes_read += d.size();
    if (bytes_read > budget_) return done(backends::errno_code(EIO));
    memory_.read(o, d, std::move(done));
  }
  uint64_t bytes_read = 0;

 private:
  const uint64_t budget_;
};

uint64_t get_be(const std::vector<std::byte>& bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value = value << 8 | std::to_integer<uint64_t>(bytes[at + i]);
  return value;
}

void put_be32(backends::BlockDevice& device, uint64_t at, uint32_t value) {
  std::vector<std::byte> bytes(4);
  for (int i = 0; i < 4; ++i) bytes[i] = std::byte(value >> (24 - 8 * i));
  if (DeviceSync().write(device, at, bytes)) throw std::runtime_error("write failed");
}

// Rewrites the JSON metadata of both copies of the LUKS2 header on `device` with `edit`, with
// valid checksums, as a writer of crafted headers would.
void edit_luks2(backends::BlockDevice& device, const std::function<void(nlohmann::json&)>& edit) {
  DeviceSync io;
  std::vector<std::byte> binary(4096);
  if (io.read(device, 0, binary)) throw std::runtime_error("read failed");
  const uint64_t hdr_size = get_be(binary, 8, 8);
  for (uint64_t at : {uint64_t{0}, hdr_size}) {
    std::vector<std::byte> copy(hdr_size);
    if (io.read(device, at, copy)) throw std::runtime_error("read failed");
    const char* text = reinterpret_cast<const char*>(copy.data() + 4096);
    auto json = nlohmann::json::parse(text, text + std::strlen(text));
    edit(json);
    const std::string changed = json.dump();
    if (changed.size() >= hdr_size - 4096) throw std::runtime_error("the edited JSON does not fit");
    std::fill(copy.begin() + 4096, copy.end(), std::byte{0});
    std::memcpy(copy.data() + 4096, changed.data(), changed.size());
    std::fill_n(copy.begin() + kLuks2ChecksumOffset, kLuks2ChecksumRoom, std::byte{0});
    const auto checksum = luks2_header_checksum(copy);
    std::copy(checksum.begin(), checksum.end(), copy.begin() + kLuks2ChecksumOffset);
    if (io.write(device, at, copy)) throw std::runtime_error("write failed");
  }
}

// LUKS1 binary header fields (big-endian).
constexpr uint64_t kLuks1PayloadOffsetAt = 104;  // in 512-byte sectors
constexpr uint64_t kLuks1KeyBytesAt = 108;
constexpr uint64_t kLuks1Keyslot0MaterialAt = 208 + 40;  // in 512-byte sectors

// Moves the data segment to `data_offset`, 1 GiB on a 2 GiB device unless given.
void move_data(backends::BlockDevice& device, const std::string& type, uint64_t data_offset) {
  if (type == "luks2")
    edit_luks2(device, [&](nlohmann::json& j) { j["segments"]["0"]["offset"] = std::to_string(data_offset); });
  else
    put_be32(device, kLuks1PayloadOffsetAt, static_cast<uint32_t>(data_offset / 512));
}

class HugeDataOffset : public ::testing::TestWithParam<std::string> {};

// The header says the data starts 1 GiB in. Opening it used to copy that whole gigabyte into
// memory (and take seconds); now it reads the header and keyslot areas only, and the container
// still unlocks, serves its payload and takes a new keyslot.
TEST_P(HugeDataOffset, OpeningReadsOnlyTheHeaderAndKeyslotAreas) {
  const std::string type = GetParam();
  auto device = std::make_shared<CountingReads>(2 * kGiB, 64 * kMiB);
  LuksContainer::format(*device, quick(type), secret("pw"));
  move_data(*device, type, kGiB);

  device->bytes_read = 0;
  auto container = LuksContainer::load(*device);
  EXPECT_LT(device->bytes_read, 2 * kMiB);
  EXPECT_EQ(container.info().data_offset, kGiB);
  EXPECT_EQ(container.info().payload_size, kGiB);
  EXPECT_TRUE(container.info().unsupported.empty()) << container.info().unsupported;

  // Adding a keyslot writes its never-copied area too: the reloaded header opens with it.
  EXPECT_EQ(container.add_key(secret("pw"), secret("second"), quick(type)), 1);
  device->bytes_read = 0;
  auto reloaded = LuksContainer::load(*device);
  EXPECT_LT(device->bytes_read, 2 * kMiB);
  auto unlocked = reloaded.unlock(secret("second"));

  LuksDevice payload(device, std::move(unlocked));
  DeviceSync io;
  const auto data = testing::pattern(64 * 1024, 7);
  ASSERT_FALSE(io.write(payload, payload.size() - data.size(), data));
  std::vector<std::byte> back(data.size());
  ASSERT_FALSE(io.read(payload, payload.size() - data.size(), back));
  EXPECT_EQ(back, data);
  std::vector<std::byte> raw(data.size());
  ASSERT_FALSE(io.read(*device, device->size() - data.size(), raw));
  EXPECT_NE(raw, data);  // ciphertext at the very end of the device
}

INSTANTIATE_TEST_SUITE_P(Formats, HugeDataOffset, ::testing::Values("luks2", "luks1"));

// A fresh 32 MiB device holding a copy of one formatted header of `type`.
std::shared_ptr<backends::MemoryDevice> formatted(const std::string& type) {
  static std::map<std::string, std::vector<std::byte>> headers;
  auto device = std::make_shared<backends::MemoryDevice>(32 * kMiB, false);
  DeviceSync io;
  auto& header = headers[type];
  if (header.empty()) {
    LuksContainer::format(*device, quick(type), secret("pw"));
    header.resize(LuksContainer::load(*device).info().data_offset);
    if (io.read(*device, 0, header)) throw std::runtime_error("read failed");
  } else if (io.write(*device, 0, header)) {
    throw std::runtime_error("write failed");
  }
  return device;
}

// Loads `device` and returns the error, which must be Kind::invalid.
std::string load_error(backends::BlockDevice& device) {
  try {
    LuksContainer::load(device);
  } catch (const LuksError& e) {
    EXPECT_EQ(e.kind, LuksError::Kind::invalid) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "the crafted header loaded";
  return "";
}

TEST(UntrustedLuksHeader, ADataOffsetBeyondTheDeviceIsRefusedByName) {
  auto luks2 = formatted("luks2");
  move_data(*luks2, "luks2", 64 * kMiB);
  EXPECT_THAT(load_error(*luks2), ::testing::HasSubstr("(segments.*.offset) 67108864 is beyond the device's end"));
  auto luks1 = formatted("luks1");
  move_data(*luks1, "luks1", 64 * kMiB);
  EXPECT_THAT(load_error(*luks1), ::testing::HasSubstr("(payload_offset) 67108864 is beyond the device's end"));
}

TEST(UntrustedLuksHeader, Luks2KeyslotAreasThatMakeNoSenseAreRefusedByName) {
  struct Case {
    const char* field;
    const char* value;
    const char* error;
  };
  for (const Case& c : {
           Case{"offset", "34359738368", "keyslots.0.area.offset 34359738368 and area.size"},
           Case{"offset", "4096", "keyslots.0.area.offset 4096 overlaps the two header copies"},
           Case{"size", "1073741824", "keyslots.0.area.size 1073741824 (1 GiB) is not the size of a keyslot"},
           Case{"size", "0", "keyslots.0.area.size 0"},
           Case{"offset", "-1", "keyslots.0.area.offset is not a decimal number"},
           Case{"offset", "18446744073709551616", "keyslots.0.area.offset is not a decimal number"},
       }) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value);
    auto device = formatted("luks2");
    edit_luks2(*device, [&](nlohmann::json& j) { j["keyslots"]["0"]["area"][c.field] = c.value; });
    const std::string error = load_error(*device);
    EXPECT_THAT(error, ::testing::HasSubstr(c.error));
    EXPECT_THAT(error, ::testing::HasSubstr("LUKS2 header at 0"));
  }
}

// `count` keyslots of 1 MiB each, side by side after the header, in both header copies.
void many_keyslots(backends::BlockDevice& device, int count) {
  edit_luks2(device, [&](nlohmann::json& j) {
    const nlohmann::json model = j["keyslots"]["0"];
    for (int i = 0; i < count; ++i) {
      auto& slot = j["keyslots"][std::to_string(i)] = model;
      slot["area"]["offset"] = std::to_string((16 + i) * kMiB);
      slot["area"]["size"] = std::to_string(kMiB);
    }
  });
}

LuksLayout locate(backends::BlockDevice& device) {
  return locate_luks_areas(device.size(), [&](uint64_t offset, uint64_t length) {
    std::vector<std::byte> bytes(length);
    if (DeviceSync().read(device, offset, bytes)) throw std::runtime_error("read failed");
    return bytes;
  });
}

// All keyslot areas together are bounded (16 MiB), each counted once although both header copies
// list it.
TEST(UntrustedLuksHeader, KeyslotAreasAreBoundedTogether) {
  auto device = std::make_shared<backends::MemoryDevice>(64 * kMiB, false);
  DeviceSync io;
  std::vector<std::byte> header(16 * kMiB);
  ASSERT_FALSE(io.read(*formatted("luks2"), 0, header));
  ASSERT_FALSE(io.write(*device, 0, header));
  many_keyslots(*device, 12);
  EXPECT_EQ(locate(*device).version, 2);
  many_keyslots(*device, 17);
  try {
    locate(*device);
    ADD_FAILURE() << "17 MiB of keyslot areas were accepted";
  } catch (const LuksError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("the keyslot areas add up to 17825792 (17 MiB)"));
  }
}

TEST(UntrustedLuksHeader, Luks1KeyslotsThatMakeNoSenseAreRefusedByName) {
  auto beyond = formatted("luks1");
  put_be32(*beyond, kLuks1Keyslot0MaterialAt, 1u << 30);  // 512 GiB in
  EXPECT_THAT(load_error(*beyond), ::testing::HasSubstr("keyslot 0: key_material_offset 1073741824 (sectors) puts"));
  auto overlapping = formatted("luks1");
  put_be32(*overlapping, kLuks1Keyslot0MaterialAt, 1);
  EXPECT_THAT(load_error(*overlapping), ::testing::HasSubstr("keyslot 0: key_material_offset 1 (sectors) overlaps"));
  auto huge_key = formatted("luks1");
  put_be32(*huge_key, kLuks1KeyBytesAt, 1u << 20);
  EXPECT_THAT(load_error(*huge_key), ::testing::HasSubstr("key_bytes 1048576 is not a key size"));
}

TEST(UntrustedLuksHeader, JsonNestedDeeperThanLibcryptsetupTakesIsRefused) {
  auto device = formatted("luks2");
  edit_luks2(*device, [](nlohmann::json& j) {
    nlohmann::json deep = nlohmann::json::array();
    for (int i = 0; i < 100; ++i) deep = nlohmann::json::array({deep});
    j["tokens"]["0"] = {{"type", "volgate-test"}, {"keyslots", nlohmann::json::array()}, {"deep", deep}};
  });
  EXPECT_THAT(load_error(*device), ::testing::HasSubstr("the JSON metadata nests deeper than 32 levels"));
}

// libcryptsetup 2.6 takes a digest it cannot compute (an unknown hash, a short salt or digest)
// for a match, so any passphrase "opens" the first keyslot, with a wrong volume key; adding or
// removing a keyslot then writes with it. Found by luks_header_fuzz. Such a header opens nothing
// and nothing is written.
TEST(UntrustedLuksHeader, ADigestThatCannotBeComputedOpensNothing) {
  for (auto [field, value] : {std::pair{"hash", "nosuchhash"}, std::pair{"salt", "AAAA"},
                              std::pair{"digest", "AAAAAAAAAAAAAAAAAAAAAAAAAA=="}}) {
    SCOPED_TRACE(std::string(field) + " = " + value);
    auto device = formatted("luks2");
    LuksContainer::load(*device).add_key(secret("pw"), secret("pw2"), quick("luks2"));
    edit_luks2(*device, [&](nlohmann::json& j) { j["digests"]["0"][field] = value; });
    DeviceSync io;
    std::vector<std::byte> before(16 * kMiB), after(16 * kMiB);
    ASSERT_FALSE(io.read(*device, 0, before));
    auto container = LuksContainer::load(*device);
    for (const char* passphrase : {"pw", "wrong"}) {
      SCOPED_TRACE(passphrase);
      try {
        container.unlock(secret(passphrase));
        ADD_FAILURE() << "unlocked";
      } catch (const LuksError& e) {
        EXPECT_EQ(e.kind, LuksError::Kind::invalid) << e.what();
        EXPECT_THAT(e.what(), ::testing::HasSubstr("digest"));
      }
      EXPECT_THROW(container.add_key(secret(passphrase), secret("new"), quick("luks2")), LuksError);
      EXPECT_THROW(container.remove_key(secret(passphrase)), LuksError);
    }
    ASSERT_FALSE(io.read(*device, 0, after));
    EXPECT_TRUE(after == before) << "the header changed";
  }
}

// Without its primary binary header a LUKS2 container opens from the secondary copy, found at
// one of the offsets the format allows; the reads stay small.
TEST(UntrustedLuksHeader, ADestroyedPrimaryHeaderStillOpensFromTheSecondary) {
  auto device = std::make_shared<CountingReads>(32 * kMiB, 64 * kMiB);
  LuksContainer::format(*device, quick("luks2"), secret("pw"));
  DeviceSync io;
  ASSERT_FALSE(io.write(*device, 0, std::vector<std::byte>(4096)));
  device->bytes_read = 0;
  auto container = LuksContainer::load(*device);
  EXPECT_LT(device->bytes_read, 2 * kMiB);
  EXPECT_NO_THROW(container.unlock(secret("pw")));
}

}  // namespace
}  // namespace volgate::crypto
