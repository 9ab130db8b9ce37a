// Fuzz target: opening a LUKS container from untrusted bytes, as `volgate serve` and
// `volgate luks dump` do on a volume somebody else wrote.
//
// Each input becomes the start of an 8 MiB MemoryDevice, and LuksContainer::load runs on it: our
// locate_luks_areas and the copy it bounds, libcryptsetup's crypt_load on that copy, and our
// description of the result. When the container is one volgate would serve, the harness unlocks
// it with the passphrase "fuzz", reads through the decrypted device, and (if asked) adds and
// removes a keyslot, checking that what was written back loads and unlocks again.
//
// Input: a control byte, then the device's bytes from offset 0.
//   bits 0-1  the stored image under the input (tests/fuzz/luks_header_fuzz_images, made by
//             make_luks_header_seeds.sh): 0 LUKS2 with pbkdf2, 1 LUKS2 with argon2id, 2 LUKS1,
//             3 none (zeroes)
//   bit 2     mirror: the primary LUKS2 header copy, as the input left it, also becomes the
//             secondary, so a change is not masked by a good secondary copy
//   bit 3     keep checksums as they are (by default the LUKS2 header copies get their checksums
//             recomputed, or almost every mutation would end at the checksum check)
//   bit 4     after a successful unlock, add and remove a keyslot
// The stored images hold the keyslots' key material (hundreds of KiB of random bytes), so an
// input needs only the header it changes: a few KiB, which keeps the stored corpus small.
//
// What must hold for every input: no crash, no sanitizer report, no exception other than
// LuksError (bad input is a clear error), and the invariants checked below.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "backends/memory_device.hpp"
#include "backends/sync_io.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"
#include "crypto/luks_layout.hpp"
#include "crypto/secure_bytes.hpp"

namespace {

using namespace volgate;

constexpr uint64_t kDeviceSize = 8 * 1024 * 1024;
constexpr uint8_t kImageBits = 0x03;
constexpr uint8_t kMirror = 0x04;
constexpr uint8_t kKeepChecksums = 0x08;
constexpr uint8_t kChangeKeyslots = 0x10;

// Unlocking runs each keyslot's PBKDF and the digest's, at costs the header chooses: a mutated
// iteration count of 2^32 would hang the run, and argon2 memory of 4 GiB exhaust it. So the
// harness (never volgate itself: real containers take seconds and a GiB on purpose) unlocks
// only containers whose every keyslot and digest costs about what the seeds do. The limits
// keep an input under about 50 ms.
constexpr size_t kMaxKeyslots = 4;
constexpr uint32_t kMaxPbkdf2Iterations = 4000;  // also for the digest
constexpr uint32_t kMaxArgon2Passes = 4;
constexpr uint32_t kMaxArgon2MemoryKib = 1024;
constexpr uint32_t kMaxArgon2Threads = 4;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "luks_header_fuzz: %s\n", what.c_str());
  std::abort();
}

crypto::SecureBytes passphrase(const char* text) {
  crypto::SecureBytes bytes(std::strlen(text));
  std::memcpy(bytes.data(), text, bytes.size());
  return bytes;
}

const std::vector<std::byte>& stored_image(int which) {
  static const std::array<std::vector<std::byte>, 3> images = [] {
    const char* names[3] = {"luks2-pbkdf2.img", "luks2-argon2.img", "luks1.img"};
    std::array<std::vector<std::byte>, 3> loaded;
    for (int i = 0; i < 3; ++i) {
      const std::string path = std::string(VOLGATE_LUKS_FUZZ_IMAGES) + "/" + names[i];
      std::ifstream in(path, std::ios::binary);
      const std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
      if (!in.good() && !in.eof()) fail("cannot read " + path);
      if (bytes.empty()) fail("missing or empty stored image " + path);
      loaded[i].resize(bytes.size());
      std::memcpy(loaded[i].data(), bytes.data(), bytes.size());
    }
    return loaded;
  }();
  return images[which];
}

uint64_t big_endian(const std::vector<std::byte>& bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value = value << 8 | std::to_integer<uint64_t>(bytes[at + i]);
  return value;
}

bool magic_at(const std::vector<std::byte>& image, size_t at, const char* magic) {
  return at + 6 <= image.size() && std::memcmp(image.data() + at, magic, 6) == 0;
}

// The hdr_size of the LUKS2 header copy at `at` if it is one the format allows and the copy lies
// inside `image`; 0 otherwise.
uint64_t copy_size(const std::vector<std::byte>& image, size_t at) {
  if (at + 4096 > image.size()) return 0;
  const uint64_t size = big_endian(image, at + 8, 8);
  for (uint64_t allowed = 16 * 1024; allowed <= 4 * 1024 * 1024; allowed *= 2)
    if (size == allowed && at + size <= image.size()) return size;
  return 0;
}

// The primary copy becomes the secondary too, with the secondary's magic and offset.
void mirror_primary(std::vector<std::byte>& image) {
  if (!magic_at(image, 0, "LUKS\xba\xbe")) return;
  const uint64_t size = copy_size(image, 0);
  if (size == 0) return;
  if (image.size() < 2 * size) image.resize(2 * size);
  std::memcpy(image.data() + size, image.data(), size);
  std::memcpy(image.data() + size, "SKUL\xba\xbe", 6);
  for (int i = 0; i < 8; ++i) image[size + 256 + i] = std::byte(size >> (56 - 8 * i));
}

// Recomputes the checksum of every LUKS2 header copy where the format allows one.
void seal_checksums(std::vector<std::byte>& image) {
  auto seal = [&](size_t at) {
    const uint64_t size = copy_size(image, at);
    if (size == 0) return;
    std::span<std::byte> copy(image.data() + at, size);
    const auto checksum = crypto::luks2_header_checksum(copy);
    if (checksum.empty()) return;  // an algorithm OpenSSL does not know: leave it
    std::memset(copy.data() + crypto::kLuks2ChecksumOffset, 0, crypto::kLuks2ChecksumRoom);
    std::memcpy(copy.data() + crypto::kLuks2ChecksumOffset, checksum.data(), checksum.size());
  };
  if (magic_at(image, 0, "LUKS\xba\xbe")) seal(0);
  for (size_t at = 16 * 1024; at <= 4 * 1024 * 1024; at *= 2)
    if (magic_at(image, at, "SKUL\xba\xbe")) seal(at);
}

// What LuksContainer promises about a container it calls servable.
void check_description(const crypto::LuksInfo& info) {
  if (info.version != "LUKS1" && info.version != "LUKS2") fail("version " + info.version);
  if (!info.unsupported.empty()) return;
  if (info.sector_size != 512 && info.sector_size != 4096) fail("servable with sector size " + std::to_string(info.sector_size));
  if (info.key_bits != 256 && info.key_bits != 512) fail("servable with a " + std::to_string(info.key_bits) + "-bit key");
  if (info.data_offset == 0 || info.payload_size == 0 || info.payload_size % info.sector_size != 0 ||
      info.data_offset > kDeviceSize || info.payload_size > kDeviceSize - info.data_offset)
    fail("servable with data offset " + std::to_string(info.data_offset) + " and payload " +
         std::to_string(info.payload_size));
}

bool cheap_keyslot(const crypto::LuksKeyslot& slot) {
  if (slot.pbkdf == "pbkdf2") return slot.iterations <= kMaxPbkdf2Iterations;
  if (slot.pbkdf == "argon2i" || slot.pbkdf == "argon2id")
    return slot.iterations <= kMaxArgon2Passes && slot.memory_kib <= kMaxArgon2MemoryKib &&
           slot.threads <= kMaxArgon2Threads;
  return false;  // unknown cost
}

bool cheap_to_unlock(const crypto::LuksInfo& info) {
  if (info.keyslots.size() > kMaxKeyslots) return false;
  if (info.digest_iterations == 0 || info.digest_iterations > kMaxPbkdf2Iterations) return false;
  return std::all_of(info.keyslots.begin(), info.keyslots.end(), cheap_keyslot);
}

// Reads the first and the last sector of the decrypted device.
void read_through(const std::shared_ptr<backends::MemoryDevice>& device, crypto::UnlockedLuks unlocked) {
  crypto::LuksDevice decrypted(device, std::move(unlocked));
  backends::SyncIo io;
  std::vector<std::byte> sector(decrypted.capabilities().min_block_size);
  if (auto ec = io.read(decrypted, 0, sector)) fail("reading the first sector: " + ec.message());
  if (auto ec = io.read(decrypted, decrypted.size() - sector.size(), sector))
    fail("reading the last sector: " + ec.message());
}

std::vector<std::byte> key_of(const crypto::UnlockedLuks& unlocked) {
  auto span = unlocked.volume_key.span();
  return {span.begin(), span.end()};
}

// Adds a keyslot for "fuzz2", then removes the one "fuzz" opens: what each writes back must
// load again and open with "fuzz2", to the same volume key, and no longer with "fuzz". (Each
// unlock costs a PBKDF, so this checks only what the write-backs could get wrong.)
void change_keyslots(backends::MemoryDevice& device, crypto::LuksContainer& container,
                     const std::vector<std::byte>& volume_key) {
  crypto::LuksFormatOptions kdf;
  kdf.pbkdf = "pbkdf2";
  kdf.pbkdf_iterations = 1000;
  try {
    container.add_key(passphrase("fuzz"), passphrase("fuzz2"), kdf);
  } catch (const crypto::LuksError&) {
    return;  // e.g. no room for another keyslot
  }
  auto reload = [&](const char* what) {
    try {
      return crypto::LuksContainer::load(device);
    } catch (const crypto::LuksError& e) {
      fail(std::string("the header written back by ") + what + " does not load: " + e.what());
    }
  };
  auto unlock = [&](crypto::LuksContainer& c, const char* with, const char* what) {
    try {
      if (key_of(c.unlock(passphrase(with))) != volume_key) fail(std::string("a different volume key after ") + what);
    } catch (const crypto::LuksError& e) {
      fail(std::string("'") + with + "' does not unlock after " + what + ": " + e.what());
    }
  };
  auto added = reload("add_key");
  unlock(added, "fuzz2", "add_key");
  try {
    added.remove_key(passphrase("fuzz"));
  } catch (const crypto::LuksError&) {
    return;
  }
  auto removed = reload("remove_key");
  unlock(removed, "fuzz2", "remove_key");
  try {
    removed.unlock(passphrase("fuzz"));
    fail("a removed keyslot still unlocks");
  } catch (const crypto::LuksError& e) {
    if (e.kind != crypto::LuksError::Kind::wrong_passphrase) fail(std::string("after remove_key: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  const uint8_t control = data[0];
  const size_t input_bytes = std::min<size_t>(size - 1, kDeviceSize);

  std::vector<std::byte> image;
  if ((control & kImageBits) != 3) image = stored_image(control & kImageBits);
  if (image.size() < input_bytes) image.resize(input_bytes);
  std::memcpy(image.data(), data + 1, input_bytes);
  if (control & kMirror) mirror_primary(image);
  if (!(control & kKeepChecksums)) seal_checksums(image);
  if (image.size() > kDeviceSize) image.resize(kDeviceSize);

  auto device = std::make_shared<backends::MemoryDevice>(kDeviceSize, false);
  backends::SyncIo io;
  if (!image.empty())
    if (auto ec = io.write(*device, 0, image)) fail("writing the image: " + ec.message());
  try {
    auto container = crypto::LuksContainer::load(*device);
    check_description(container.info());
    if (!container.info().unsupported.empty() || !cheap_to_unlock(container.info())) return 0;
    auto unlocked = container.unlock(passphrase("fuzz"));
    const auto volume_key = key_of(unlocked);
    read_through(device, std::move(unlocked));
    if (control & kChangeKeyslots) change_keyslots(*device, container, volume_key);
  } catch (const crypto::LuksError&) {
    // The expected answer to most inputs: a clear error.
  }
  return 0;
}
