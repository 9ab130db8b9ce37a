#include "crypto/luks_layout.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "common/size.hpp"
#include "crypto/luks_error.hpp"

namespace volgate::crypto {
namespace {

// ---------------------------------------------------------------- facts of the on-disk formats
// Both versions start with this magic and a big-endian 16-bit version; a LUKS2 secondary header
// has its own magic.
constexpr unsigned char kMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
constexpr unsigned char kSecondaryMagic[6] = {'S', 'K', 'U', 'L', 0xba, 0xbe};
constexpr uint64_t kVersionAt = 6;

// LUKS1: a 592-byte binary header, then the key material of each keyslot at its own offset.
constexpr uint64_t kLuks1HeaderBytes = 592;
constexpr uint64_t kLuks1KeyBytesAt = 108;
constexpr uint64_t kLuks1KeyslotsAt = 208;
constexpr uint64_t kLuks1KeyslotBytes = 48;
constexpr int kLuks1Keyslots = 8;
constexpr uint32_t kLuks1KeyslotActive = 0x00AC71F3;
constexpr uint64_t kLuks1KeyMaterialOffsetAt = 40;  // within a keyslot, in 512-byte sectors
constexpr uint64_t kLuks1StripesAt = 44;
constexpr uint64_t kSector = 512;

// LUKS2: two copies of the header (a 4096-byte binary header, then the JSON area), the
// secondary right after the primary; each copy is hdr_size bytes, a power of two from 16 KiB
// to 4 MiB. The keyslot areas follow both copies.
constexpr uint64_t kLuks2BinaryHeaderBytes = 4096;
constexpr uint64_t kLuks2HdrSizeAt = 8;
constexpr uint64_t kLuks2ChecksumAlgAt = 72;
constexpr uint64_t kLuks2ChecksumAlgRoom = 32;
constexpr uint64_t kLuks2HdrOffsetAt = 256;
constexpr uint64_t kLuks2SmallestCopy = 16 * 1024;
constexpr uint64_t kLuks2LargestCopy = 4 * 1024 * 1024;
constexpr int kLuks2Keyslots = 32;

// ---------------------------------------------------------------- what volgate accepts
// The key material of a keyslot is the volume key split into stripes (4000 in every container
// cryptsetup, QEMU or librbd write): 256 KiB for a 512-bit key. 1 MiB leaves room for a
// 2048-bit key; more is no container anyone made.
constexpr uint64_t kMaxKeyslotArea = 1024 * 1024;
constexpr uint64_t kMaxLuks1KeyBytes = 256;
// All LUKS2 keyslot areas together: cryptsetup's default keyslots area. 32 keyslots of 1024-bit
// keys fit in it.
constexpr uint64_t kMaxKeyslotAreas = 16 * 1024 * 1024;
// libcryptsetup's JSON parser (json-c) refuses deeper nesting, so a deeper copy is unusable.
constexpr int kMaxJsonDepth = 32;

[[noreturn]] void refuse(const std::string& message) { throw LuksError(LuksError::Kind::invalid, message); }

uint64_t big_endian(std::span<const std::byte> bytes, uint64_t at, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value = value << 8 | std::to_integer<uint64_t>(bytes[at + i]);
  return value;
}

bool has_magic(std::span<const std::byte> bytes, const unsigned char (&magic)[6]) {
  return bytes.size() >= sizeof magic && std::memcmp(bytes.data(), magic, sizeof magic) == 0;
}

bool fits(uint64_t offset, uint64_t length, uint64_t device_size) {
  return offset <= device_size && length <= device_size - offset;
}

std::string bytes_text(uint64_t bytes) { return std::to_string(bytes) + " (" + format_size(bytes) + ")"; }

// ---------------------------------------------------------------- LUKS1

void locate_luks1(uint64_t device_size, std::span<const std::byte> first, LuksLayout& layout) {
  if (first.size() < kLuks1HeaderBytes) return;  // libcryptsetup says the device is too small
  const uint64_t key_bytes = big_endian(first, kLuks1KeyBytesAt, 4);
  if (key_bytes == 0 || key_bytes > kMaxLuks1KeyBytes)
    refuse("LUKS1 header: key_bytes " + std::to_string(key_bytes) + " is not a key size (1 to " +
           std::to_string(kMaxLuks1KeyBytes) + ")");
  for (int slot = 0; slot < kLuks1Keyslots; ++slot) {
    const uint64_t at = kLuks1KeyslotsAt + slot * kLuks1KeyslotBytes;
    if (big_endian(first, at, 4) != kLuks1KeyslotActive) continue;  // only active keys are read
    const std::string name = "LUKS1 keyslot " + std::to_string(slot) + ": ";
    const uint64_t offset = big_endian(first, at + kLuks1KeyMaterialOffsetAt, 4) * kSector;
    const uint64_t stripes = big_endian(first, at + kLuks1StripesAt, 4);
    if (offset < kLuks1HeaderBytes)
      refuse(name + "key_material_offset " + std::to_string(offset / kSector) +
             " (sectors) overlaps the 592-byte header");
    const uint64_t material = key_bytes * stripes;  // both at most 32 bits: no overflow
    if (stripes == 0 || material > kMaxKeyslotArea)
      refuse(name + "stripes " + std::to_string(stripes) + " make " + bytes_text(material) +
             " of key material (at most " + format_size(kMaxKeyslotArea) + ")");
    const uint64_t length = (material + kSector - 1) / kSector * kSector;
    if (!fits(offset, length, device_size))
      refuse(name + "key_material_offset " + std::to_string(offset / kSector) + " (sectors) puts " +
             bytes_text(length) + " of key material beyond the device's end at " + bytes_text(device_size));
    layout.areas.push_back({offset, length});
  }
}

// ---------------------------------------------------------------- LUKS2

// A LUKS2 header copy whose binary header passes the format's checks and whose checksum matches:
// the ones libcryptsetup considers.
struct Luks2Copy {
  uint64_t offset = 0;
  std::vector<std::byte> bytes;  // hdr_size bytes
};

class Luks2Locator {
 public:
  Luks2Locator(uint64_t device_size, const ReadDeviceBytes& read, LuksLayout& layout)
      : device_size_(device_size), read_(read), layout_(layout) {}

  void run(std::span<const std::byte> first) {
    // libcryptsetup reads the secondary copy where a good primary says it is, and only without
    // one tries every offset the format allows, taking the first good copy there.
    std::optional<Luks2Copy> primary;
    if (has_magic(first, kMagic)) primary = check_copy(0, first, false);
    if (primary) {
      const uint64_t secondary_at = primary->bytes.size();
      copies_.push_back(std::move(*primary));
      if (auto binary = read_binary_header(secondary_at); binary && has_magic(*binary, kSecondaryMagic))
        if (auto secondary = check_copy(secondary_at, *binary, true)) copies_.push_back(std::move(*secondary));
    } else {
      for (uint64_t at = kLuks2SmallestCopy; at <= kLuks2LargestCopy; at *= 2) {
        auto binary = read_binary_header(at);
        if (!binary || !has_magic(*binary, kSecondaryMagic)) continue;
        layout_.signature = true;
        layout_.version = 2;
        if (auto secondary = check_copy(at, *binary, true)) {
          copies_.push_back(std::move(*secondary));
          break;
        }
      }
    }
    // With no usable copy libcryptsetup fails to load; say why when a field is to blame.
    if (copies_.empty() && !first_problem_.empty()) refuse(first_problem_);
    std::string unparsed;
    for (const auto& copy : copies_) {
      std::string why;
      if (auto json = parse_json(copy, why))
        add_keyslot_areas(copy, *json);
      else if (unparsed.empty())
        unparsed = "LUKS2 header at " + std::to_string(copy.offset) + ": the JSON metadata " + why;
    }
    // With no copy parsed here, keyslots libcryptsetup might still find would not be copied:
    // refuse rather than let a right passphrase seem wrong. (An unparsable copy beside a good
    // one is damage, which libcryptsetup passes over for the good one.)
    if (parsed_ == 0 && !unparsed.empty()) refuse(unparsed);
    // Both copies normally list the same areas: count each once.
    uint64_t keyslot_bytes = 0;
    for (const auto& [offset, size] : keyslot_areas_) keyslot_bytes += size;
    if (keyslot_bytes > kMaxKeyslotAreas)
      refuse("LUKS2 header: the keyslot areas add up to " + bytes_text(keyslot_bytes) +
             ", more than the " + format_size(kMaxKeyslotAreas) + " any real container needs");
  }

 private:
  std::optional<std::vector<std::byte>> read_binary_header(uint64_t at) {
    if (!fits(at, kLuks2BinaryHeaderBytes, device_size_)) return std::nullopt;
    layout_.areas.push_back({at, kLuks2BinaryHeaderBytes});
    return read_(at, kLuks2BinaryHeaderBytes);
  }

  // The whole copy at `at` if its binary header is sound and its checksum matches; a copy that
  // fails is skipped, as libcryptsetup skips it, and the first failure naming a field is kept.
  std::optional<Luks2Copy> check_copy(uint64_t at, std::span<const std::byte> binary, bool secondary) {
    const std::string name = std::string("LUKS2 ") + (secondary ? "secondary" : "primary") +
                              " header at " + std::to_string(at) + ": ";
    if (binary.size() < kLuks2BinaryHeaderBytes || big_endian(binary, kVersionAt, 2) != 2) return std::nullopt;
    const uint64_t hdr_size = big_endian(binary, kLuks2HdrSizeAt, 8);
    const uint64_t hdr_offset = big_endian(binary, kLuks2HdrOffsetAt, 8);
    bool allowed = false;
    for (uint64_t size = kLuks2SmallestCopy; size <= kLuks2LargestCopy; size *= 2) allowed |= hdr_size == size;
    if (!allowed)
      return problem(name + "hdr_size " + std::to_string(hdr_size) +
                     " is not a size the format allows (16 KiB to 4 MiB, a power of two)");
    if (hdr_offset != at)
      return problem(name + "hdr_offset " + std::to_string(hdr_offset) + " is not where the header is");
    if (secondary && hdr_size != at)
      return problem(name + "hdr_size " + std::to_string(hdr_size) +
                     " differs from the primary's, which the secondary header follows");
    if (!fits(at, hdr_size, device_size_))
      return problem(name + "hdr_size " + bytes_text(hdr_size) + " reaches beyond the device's end at " +
                     bytes_text(device_size_));
    layout_.areas.push_back({at, hdr_size});
    Luks2Copy copy{at, read_(at, hdr_size)};
    const auto checksum = luks2_header_checksum(copy.bytes);
    // An algorithm OpenSSL does not know cannot be checked here; libcryptsetup will.
    if (!checksum.empty() &&
        std::memcmp(checksum.data(), copy.bytes.data() + kLuks2ChecksumOffset, checksum.size()) != 0)
      return std::nullopt;
    return copy;
  }

  std::nullopt_t problem(const std::string& text) {
    if (first_problem_.empty()) first_problem_ = text;
    return std::nullopt;
  }

  // Adds the areas of the keyslots that hold key material.
  void add_keyslot_areas(const Luks2Copy& copy, const nlohmann::json& json) {
    ++parsed_;
    const uint64_t hdr_size = copy.bytes.size();
    const std::string where = "LUKS2 header at " + std::to_string(copy.offset) + ": ";
    auto keyslots = json.find("keyslots");
    if (keyslots == json.end() || !keyslots->is_object()) refuse(where + "no keyslots object");
    if (keyslots->size() > kLuks2Keyslots)
      refuse(where + "keyslots lists " + std::to_string(keyslots->size()) + " entries; LUKS2 has at most " +
             std::to_string(kLuks2Keyslots));
    for (const auto& [id, keyslot] : keyslots->items()) {
      const bool number = !id.empty() && id.size() <= 2 &&
                          std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!number || std::stoi(id) >= kLuks2Keyslots)
        refuse(where + "keyslots has an entry named other than a number from 0 to 31");
      const std::string name = where + "keyslots." + id + ".";
      if (!keyslot.is_object()) refuse(name + "is not an object");
      // Only "luks2" keyslots hold key material. A "reencrypt" keyslot's area is read only by a
      // reencryption, which volgate never runs; other types libcryptsetup refuses.
      auto type = keyslot.find("type");
      if (type == keyslot.end() || !type->is_string() || *type != "luks2") continue;
      auto area = keyslot.find("area");
      if (area == keyslot.end() || !area->is_object()) refuse(name + "area is missing");
      const uint64_t offset = decimal(*area, "offset", name + "area.offset");
      const uint64_t size = decimal(*area, "size", name + "area.size");
      if (size == 0 || size > kMaxKeyslotArea)
        refuse(name + "area.size " + bytes_text(size) + " is not the size of a keyslot (up to " +
               format_size(kMaxKeyslotArea) + ")");
      if (offset < 2 * hdr_size)
        refuse(name + "area.offset " + std::to_string(offset) + " overlaps the two header copies (" +
               bytes_text(2 * hdr_size) + ")");
      if (!fits(offset, size, device_size_))
        refuse(name + "area.offset " + std::to_string(offset) + " and area.size " + std::to_string(size) +
               " reach beyond the device's end at " + bytes_text(device_size_));
      layout_.areas.push_back({offset, size});
      keyslot_areas_.emplace(offset, size);
    }
  }

  // The JSON text of a copy (up to its first NUL), parsed with nesting limited; nothing, and
  // why in `why`, if it does not parse.
  static std::optional<nlohmann::json> parse_json(const Luks2Copy& copy, std::string& why) {
    const auto* text = reinterpret_cast<const char*>(copy.bytes.data() + kLuks2BinaryHeaderBytes);
    const size_t room = copy.bytes.size() - kLuks2BinaryHeaderBytes;
    const size_t length = std::find(text, text + room, '\0') - text;
    struct TooDeep {};
    auto limit_depth = [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      return true;
    };
    try {
      auto json = nlohmann::json::parse(text, text + length, limit_depth);
      if (json.is_object()) return json;
      why = "is not a JSON object";
    } catch (const TooDeep&) {
      why = "nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
    } catch (const nlohmann::json::parse_error& e) {
      // Not e.what(): it quotes the input.
      why = "does not parse as JSON (at byte " + std::to_string(e.byte) + ")";
    }
    return std::nullopt;
  }

  // A uint64 the format writes as a string of decimal digits.
  static uint64_t decimal(const nlohmann::json& object, const char* key, const std::string& field) {
    auto value = object.find(key);
    if (value == object.end() || !value->is_string()) refuse(field + " is missing or not a string");
    const auto& text = value->get_ref<const std::string&>();
    uint64_t number = 0;
    bool ok = !text.empty() && text.size() <= 20;
    for (char c : text) {
      if (!ok) break;
      const uint64_t digit = static_cast<uint64_t>(c - '0');
      ok = c >= '0' && c <= '9' && number <= (UINT64_MAX - digit) / 10;
      number = number * 10 + digit;
    }
    if (!ok) refuse(field + " is not a decimal number below 2^64");
    return number;
  }

  const uint64_t device_size_;
  const ReadDeviceBytes& read_;
  LuksLayout& layout_;
  std::vector<Luks2Copy> copies_;
  int parsed_ = 0;
  std::set<std::pair<uint64_t, uint64_t>> keyslot_areas_;  // offset, size
  std::string first_problem_;
};

}  // namespace

LuksLayout locate_luks_areas(uint64_t device_size, const ReadDeviceBytes& read) {
  LuksLayout layout;
  const uint64_t first_bytes = std::min<uint64_t>(device_size, kLuks2BinaryHeaderBytes);
  if (first_bytes == 0) return layout;
  layout.areas.push_back({0, first_bytes});
  const std::vector<std::byte> first = read(0, first_bytes);
  const uint64_t version = first.size() >= kVersionAt + 2 ? big_endian(first, kVersionAt, 2) : 0;
  if (has_magic(first, kMagic)) {
    layout.signature = true;
    if (version == 1 || version == 2) layout.version = static_cast<int>(version);
  }
  if (layout.version == 1) {
    locate_luks1(device_size, first, layout);
  } else if (layout.version == 2 || !layout.signature) {
    // Also without a primary magic: a LUKS2 container whose primary header is destroyed still
    // opens from its secondary copy.
    Luks2Locator(device_size, read, layout).run(first);
  }
  return layout;
}

std::vector<std::byte> luks2_header_checksum(std::span<const std::byte> copy) {
  if (copy.size() < kLuks2BinaryHeaderBytes) return {};
  char name[kLuks2ChecksumAlgRoom + 1] = {};
  std::memcpy(name, copy.data() + kLuks2ChecksumAlgAt, kLuks2ChecksumAlgRoom);
  const EVP_MD* md = EVP_get_digestbyname(name);
  if (!md || static_cast<size_t>(EVP_MD_get_size(md)) > kLuks2ChecksumRoom) return {};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  static const std::byte zeroes[kLuks2ChecksumRoom] = {};
  const std::byte* after = copy.data() + kLuks2ChecksumOffset + kLuks2ChecksumRoom;
  std::vector<std::byte> digest(static_cast<size_t>(EVP_MD_get_size(md)));
  unsigned int digest_length = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), copy.data(), kLuks2ChecksumOffset) != 1 ||
      EVP_DigestUpdate(ctx.get(), zeroes, sizeof zeroes) != 1 ||
      EVP_DigestUpdate(ctx.get(), after, copy.size() - (kLuks2ChecksumOffset + kLuks2ChecksumRoom)) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(digest.data()), &digest_length) != 1)
    return {};
  digest.resize(digest_length);
  return digest;
}

}  // namespace volgate::crypto
