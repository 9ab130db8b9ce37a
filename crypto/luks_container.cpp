#include "crypto/luks_container.hpp"

#include <libcryptsetup.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "backends/sync_io.hpp"
#include "common/buffer_pool.hpp"
#include "common/size.hpp"
#include "crypto/luks_digest.hpp"
#include "crypto/luks_layout.hpp"
#include "crypto/xts_cipher.hpp"

namespace volgate::crypto {
namespace {

using Kind = LuksError::Kind;

// The memory file mirrors the device in units this large: what is read from the device, and
// what is compared and written back, is always whole units (aligned for any device).
constexpr uint64_t kUnit = 4096;
// Longest single read or write of the device.
constexpr uint64_t kCopyChunk = 1024 * 1024;
// Where a LUKS1 binary header keeps the iteration count of its volume key digest, and its size.
constexpr uint64_t kLuks1DigestIterationsAt = 164;
constexpr uint64_t kLuks1HeaderBytes = 592;

[[noreturn]] void fail(Kind kind, const std::string& message) { throw LuksError(kind, message); }

std::string errno_text(int rc) { return std::strerror(rc < 0 ? -rc : rc); }

}  // namespace

struct LuksContainer::Image {
  int fd = -1;
  crypt_device* cd = nullptr;
  uint64_t device_size = 0;
  // The units of the device held in the memory file, by index, as the device had them when they
  // were read or last written: to write back only what changed. The rest of the file is a hole.
  std::map<uint64_t, std::vector<std::byte>> original;
  std::string last_error;  // libcryptsetup's latest error message

  ~Image() {
    close_device();
    if (fd >= 0) ::close(fd);
  }

  std::string path() const { return "/proc/self/fd/" + std::to_string(fd); }

  static std::unique_ptr<Image> create(uint64_t device_size) {
    // libcryptsetup takes a global metadata lock per device; our copy is private to us.
    crypt_metadata_locking(nullptr, 0);
    auto image = std::make_unique<Image>();
    image->device_size = device_size;
    image->fd = ::memfd_create("volgate-luks-header", MFD_CLOEXEC);
    if (image->fd < 0) fail(Kind::io, std::string("memfd_create: ") + std::strerror(errno));
    // As large as the device, so libcryptsetup sees its real size; sparse, so only the copied
    // units take memory.
    if (::ftruncate(image->fd, static_cast<off_t>(device_size)) < 0)
      fail(Kind::io, std::string("sizing the header copy: ") + std::strerror(errno));
    return image;
  }

  void close_device() {
    if (cd) crypt_free(cd);
    cd = nullptr;
  }

  // libcryptsetup reports errors through a callback; keep the last one for our messages.
  static void log(int level, const char* message, void* self) {
    std::string text(message ? message : "");
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (level == CRYPT_LOG_ERROR) static_cast<Image*>(self)->last_error = text;
    if (level != CRYPT_LOG_DEBUG_JSON) spdlog::debug("libcryptsetup: {}", text);
  }

  std::string error_or(const std::string& fallback) const {
    if (last_error.empty()) return fallback;
    // libcryptsetup names the device by the path it was given: this copy's, which tells the
    // user nothing ("Device /proc/self/fd/4 is too small").
    std::string text = last_error;
    const std::pair<std::string, std::string> names[] = {{"Device " + path(), "The container"},
                                                         {path(), "the container"}};
    for (const auto& [from, to] : names)
      for (size_t at; (at = text.find(from)) != std::string::npos;) text.replace(at, from.size(), to);
    return text;
  }

  void open_device() {
    close_device();
    last_error.clear();
    if (int rc = crypt_init(&cd, path().c_str()); rc < 0)
      fail(Kind::io, "cannot open the header copy: " + errno_text(rc));
    crypt_set_log_callback(cd, &Image::log, this);
  }

  // [first, end) in units, clipped to the device.
  std::pair<uint64_t, uint64_t> units_of(uint64_t offset, uint64_t length) const {
    const uint64_t start = std::min(offset, device_size);
    const uint64_t end = start + std::min(length, device_size - start);
    return {start / kUnit, (end + kUnit - 1) / kUnit};
  }
  uint64_t unit_bytes(uint64_t unit) const { return std::min(kUnit, device_size - unit * kUnit); }

  // Bytes of the memory file; throws LuksError.
  std::vector<std::byte> read_copy(uint64_t offset, uint64_t length) const {
    std::vector<std::byte> bytes(static_cast<size_t>(length));
    if (::pread(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(bytes.size()))
      fail(Kind::io, std::string("reading the header copy: ") + std::strerror(errno));
    return bytes;
  }

  // Brings the units covering [offset, offset + length) from the device into the memory file
  // (those not there yet), and returns those bytes of the copy.
  std::vector<std::byte> fetch(backends::BlockDevice& device, backends::SyncIo& io, uint64_t offset,
                               uint64_t length) {
    auto [unit, end] = units_of(offset, length);
    while (unit < end) {
      if (original.count(unit)) {
        ++unit;
        continue;
      }
      // A run of missing units, read at once.
      uint64_t run_end = unit + 1;
      while (run_end < end && !original.count(run_end) && (run_end - unit) * kUnit < kCopyChunk) ++run_end;
      const uint64_t at = unit * kUnit;
      // Page-aligned: a file opened O_DIRECT (`direct`) refuses other buffers with EINVAL.
      Buffer chunk = Buffer::allocate(static_cast<size_t>(std::min(device_size, run_end * kUnit) - at));
      if (auto ec = io.read(device, at, chunk.span()))
        fail(Kind::io, "reading the header at offset " + std::to_string(at) + ": " + ec.message());
      if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(at)) != static_cast<ssize_t>(chunk.size()))
        fail(Kind::io, std::string("writing the header copy: ") + std::strerror(errno));
      for (uint64_t u = unit; u < run_end; ++u) {
        const auto* from = chunk.data() + (u - unit) * kUnit;
        original.emplace(u, std::vector<std::byte>(from, from + unit_bytes(u)));
      }
      unit = run_end;
    }
    return read_copy(offset, length);
  }
};

// Chooses the key derivation for keyslots created from now on.
void set_pbkdf(LuksContainer::Image& image, bool luks2, const LuksFormatOptions& options) {
  const std::string& pbkdf = options.pbkdf;
  crypt_pbkdf_type kdf = *crypt_get_pbkdf_default(luks2 ? CRYPT_LUKS2 : CRYPT_LUKS1);
  if (!pbkdf.empty())
    kdf.type = pbkdf == "argon2id" ? CRYPT_KDF_ARGON2ID
               : pbkdf == "argon2i" ? CRYPT_KDF_ARGON2I
                                    : CRYPT_KDF_PBKDF2;
  if (std::strcmp(kdf.type, CRYPT_KDF_PBKDF2) == 0) {
    kdf.hash = "sha256";
    kdf.max_memory_kb = 0;
    kdf.parallel_threads = 0;
  } else if (options.pbkdf_memory_kib) {
    kdf.max_memory_kb = options.pbkdf_memory_kib;
  }
  if (options.iter_time_ms) kdf.time_ms = options.iter_time_ms;
  if (options.pbkdf_iterations) {
    kdf.iterations = options.pbkdf_iterations;
    kdf.flags |= CRYPT_PBKDF_NO_BENCHMARK;
  }
  if (int rc = crypt_set_pbkdf_type(image.cd, &kdf); rc < 0)
    fail(Kind::invalid, image.error_or("PBKDF settings refused: " + errno_text(rc)));
}

LuksContainer::LuksContainer(backends::BlockDevice& device, std::unique_ptr<Image> image)
    : device_(&device), image_(std::move(image)) {
  refresh_info();
}

LuksContainer::LuksContainer(LuksContainer&&) noexcept = default;
LuksContainer& LuksContainer::operator=(LuksContainer&&) noexcept = default;
LuksContainer::~LuksContainer() = default;

LuksContainer LuksContainer::load(backends::BlockDevice& device) {
  backends::SyncIo io;
  auto image = Image::create(device.size());
  // Only the header and keyslot areas are copied: the data offset is the header's word, and an
  // untrusted header may put it far out (copying up to it once cost 1 GiB for a crafted one).
  const LuksLayout layout = locate_luks_areas(device.size(), [&](uint64_t offset, uint64_t length) {
    return image->fetch(device, io, offset, length);
  });
  // A LUKS signature that does not load is a damaged header, never "not LUKS": that answer
  // lets `format` go ahead without --force.
  if (!layout.signature) fail(Kind::not_luks, "no LUKS header found");
  for (const ByteRange& area : layout.areas) image->fetch(device, io, area.offset, area.length);
  image->open_device();
  if (int rc = crypt_load(image->cd, CRYPT_LUKS, nullptr); rc < 0)
    fail(Kind::invalid, image->error_or("the LUKS header is damaged: " + errno_text(rc)));
  const uint64_t data_offset = crypt_get_data_offset(image->cd) * 512;
  if (data_offset > device.size())
    fail(Kind::invalid, std::string("the LUKS data offset (") +
                            (layout.version == 1 ? "payload_offset" : "segments.*.offset") + ") " +
                            std::to_string(data_offset) + " is beyond the device's end at " +
                            std::to_string(device.size()));
  return LuksContainer(device, std::move(image));
}

LuksContainer LuksContainer::format(backends::BlockDevice& device, const LuksFormatOptions& options,
                                    const SecureBytes& passphrase) {
  const bool luks2 = options.type == "luks2";
  if (!luks2 && options.type != "luks1")
    fail(Kind::invalid, "unknown LUKS type '" + options.type + "' (luks1 or luks2)");
  if (options.cipher != "aes-xts-plain64")
    fail(Kind::unsupported, "cipher '" + options.cipher + "': volgate formats aes-xts-plain64 only");
  if (options.key_bits != 256 && options.key_bits != 512)
    fail(Kind::invalid, "key size " + std::to_string(options.key_bits) + ": AES-XTS takes 256 or 512 bits");
  uint32_t sector_size = options.sector_size;
  if (sector_size == 0) sector_size = luks2 && device.size() % 4096 == 0 ? 4096 : 512;
  if (sector_size != 512 && sector_size != 4096)
    fail(Kind::invalid, "sector size " + std::to_string(sector_size) + ": use 512 or 4096");
  if (!luks2 && sector_size != 512) fail(Kind::invalid, "LUKS1 has 512-byte sectors only");
  if (device.size() % sector_size != 0)
    fail(Kind::invalid, "the device size " + std::to_string(device.size()) +
                            " is not a multiple of the sector size " + std::to_string(sector_size));
  std::string pbkdf = options.pbkdf.empty() ? (luks2 ? "argon2id" : "pbkdf2") : options.pbkdf;
  if (pbkdf != "argon2id" && pbkdf != "argon2i" && pbkdf != "pbkdf2")
    fail(Kind::invalid, "unknown PBKDF '" + pbkdf + "' (argon2id, argon2i or pbkdf2)");
  if (!luks2 && pbkdf != "pbkdf2") fail(Kind::invalid, "LUKS1 keyslots use pbkdf2 only");

  auto image = Image::create(device.size());
  image->open_device();
  crypt_device* cd = image->cd;
  const char* type = luks2 ? CRYPT_LUKS2 : CRYPT_LUKS1;
  LuksFormatOptions kdf = options;
  kdf.pbkdf = pbkdf;
  set_pbkdf(*image, luks2, kdf);

  crypt_params_luks2 params2{};
  params2.sector_size = sector_size;
  crypt_params_luks1 params1{};
  params1.hash = "sha256";
  void* params = luks2 ? static_cast<void*>(&params2) : static_cast<void*>(&params1);
  if (int rc = crypt_format(cd, type, "aes", "xts-plain64", nullptr, nullptr,
                            options.key_bits / 8, params);
      rc < 0)
    fail(rc == -EINVAL ? Kind::invalid : Kind::io,
         image->error_or("formatting failed: " + errno_text(rc)));
  // Known once the header is laid out, and checked before the keyslot's key derivation (seconds
  // and up to a GiB of memory for argon2).
  const uint64_t data_offset = crypt_get_data_offset(cd) * 512;
  if (data_offset >= device.size())
    fail(Kind::invalid, "the device (" + format_size(device.size()) +
                            ") has no room for data after a " + format_size(data_offset) + " header");
  if (int rc = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, nullptr, 0, passphrase.chars(),
                                               passphrase.size());
      rc < 0)
    fail(Kind::io, image->error_or("adding the keyslot failed: " + errno_text(rc)));

  // The whole header area goes to the device: the old content there is not ours to keep.
  LuksContainer container(device, std::move(image));
  container.write_back(true);
  return container;
}

// The largest iteration count of the pbkdf2 digests in LUKS2 metadata; 0 if one is not pbkdf2
// or has none (its cost is then unknown).
static uint32_t largest_digest_iterations(const nlohmann::json& metadata) {
  auto digests = metadata.find("digests");
  if (digests == metadata.end() || !digests->is_object() || digests->empty()) return 0;
  uint32_t largest = 0;
  for (const auto& digest : *digests) {
    auto iterations = digest.is_object() ? digest.find("iterations") : digest.end();
    if (!digest.is_object() || iterations == digest.end() || !iterations->is_number_unsigned() ||
        iterations->get<uint64_t>() > UINT32_MAX)
      return 0;
    largest = std::max(largest, iterations->get<uint32_t>());
  }
  return largest;
}

void LuksContainer::refresh_info() {
  crypt_device* cd = image_->cd;
  LuksInfo info;
  const char* type = crypt_get_type(cd);
  const bool luks2 = type && std::strcmp(type, CRYPT_LUKS2) == 0;
  info.version = luks2 ? "LUKS2" : "LUKS1";
  if (const char* uuid = crypt_get_uuid(cd)) info.uuid = uuid;
  const std::string cipher = crypt_get_cipher(cd) ? crypt_get_cipher(cd) : "";
  const std::string mode = crypt_get_cipher_mode(cd) ? crypt_get_cipher_mode(cd) : "";
  info.cipher = cipher + "-" + mode;
  info.key_bits = static_cast<uint32_t>(crypt_get_volume_key_size(cd)) * 8;
  info.sector_size = static_cast<uint32_t>(std::max(512, crypt_get_sector_size(cd)));
  info.data_offset = crypt_get_data_offset(cd) * 512;
  info.iv_offset = crypt_get_iv_offset(cd);
  info.payload_size = image_->device_size > info.data_offset ? image_->device_size - info.data_offset : 0;

  std::vector<std::string> problems;
  if (cipher != "aes" || mode != "xts-plain64")
    problems.push_back("cipher " + info.cipher + " (volgate serves aes-xts-plain64 only)");
  if (info.key_bits != 256 && info.key_bits != 512)
    problems.push_back(std::to_string(info.key_bits) + "-bit key");
  if (!XtsCipher::supports_sector_size(info.sector_size))
    problems.push_back("encryption sector size " + std::to_string(info.sector_size));
  crypt_params_integrity integrity{};
  if (crypt_get_integrity_info(cd, &integrity) == 0 && integrity.integrity && *integrity.integrity)
    problems.push_back(std::string("integrity protection (") + integrity.integrity + ")");
  if (luks2) {
    uint32_t requirements = 0;
    if (crypt_persistent_flags_get(cd, CRYPT_FLAGS_REQUIREMENTS, &requirements) == 0) {
      if (requirements & (CRYPT_REQUIREMENT_ONLINE_REENCRYPT | CRYPT_REQUIREMENT_OFFLINE_REENCRYPT))
        problems.push_back("a reencryption in progress");
      if (requirements & CRYPT_REQUIREMENT_UNKNOWN)
        problems.push_back("an unknown LUKS2 requirement flag");
    }
    // The segments tell whether the payload has a fixed size and is one plain crypt segment.
    const char* text = nullptr;
    if (crypt_dump_json(cd, &text, 0) == 0 && text) {
      auto json = nlohmann::json::parse(text, nullptr, false);
      auto segments = json.is_object() ? json.value("segments", nlohmann::json::object())
                                       : nlohmann::json::object();
      if (segments.size() != 1) {
        problems.push_back(std::to_string(segments.size()) + " data segments");
      } else {
        const auto& segment = segments.begin().value();
        if (!segment.is_object())
          problems.push_back("a malformed data segment");
        else if (segment.value("type", "") != "crypt")
          problems.push_back("a data segment of type '" + segment.value("type", "") + "'");
        std::string size = segment.is_object() ? segment.value("size", "dynamic") : "dynamic";
        if (size != "dynamic") {
          uint64_t fixed = std::strtoull(size.c_str(), nullptr, 10);
          info.payload_size = std::min(info.payload_size, fixed);
        }
      }
      info.digest_iterations = largest_digest_iterations(json);
    }
  } else {
    // LUKS1 has one digest, its iteration count at a fixed place in the binary header.
    const auto bytes = image_->read_copy(kLuks1DigestIterationsAt, 4);
    for (std::byte b : bytes) info.digest_iterations = info.digest_iterations << 8 | std::to_integer<uint32_t>(b);
  }
  info.payload_size -= info.payload_size % info.sector_size;  // a partial last sector is unusable
  if (info.payload_size == 0) problems.push_back("no room for data after the header");
  // Data must start after the metadata and keyslots, or writes would overwrite them; a data
  // offset of 0 means a detached header, which volgate does not handle.
  uint64_t metadata_size = 0, keyslots_size = 0;
  if (luks2 && crypt_get_metadata_size(cd, &metadata_size, &keyslots_size) == 0 &&
      info.data_offset < 2 * metadata_size + keyslots_size)
    problems.push_back("a data segment that overlaps the header");
  if (info.data_offset == 0) problems.push_back("a detached header (data offset 0)");
  for (size_t i = 0; i < problems.size(); ++i)
    info.unsupported += (i ? ", " : "") + problems[i];

  const int slots = crypt_keyslot_max(luks2 ? CRYPT_LUKS2 : CRYPT_LUKS1);
  for (int slot = 0; slot < slots; ++slot) {
    auto status = crypt_keyslot_status(cd, slot);
    if (status != CRYPT_SLOT_ACTIVE && status != CRYPT_SLOT_ACTIVE_LAST) continue;
    LuksKeyslot ks;
    ks.index = slot;
    crypt_pbkdf_type kdf{};
    if (crypt_keyslot_get_pbkdf(cd, slot, &kdf) == 0) {
      ks.pbkdf = kdf.type ? kdf.type : "";
      ks.iterations = kdf.iterations;
      ks.memory_kib = kdf.max_memory_kb;
      ks.threads = kdf.parallel_threads;
    }
    info.keyslots.push_back(ks);
  }
  info_ = std::move(info);
}

// Recovers the volume key with `passphrase`, and checks it against the header's digest on our
// own (see luks_digest.hpp: libcryptsetup 2.6 hands out a wrong key for any passphrase when it
// cannot compute the digest). The check costs one more digest PBKDF: about 125 ms for a
// cryptsetup-made LUKS2 header, a few ms for LUKS1.
LuksContainer::OpenedKeyslot LuksContainer::open_keyslot(const SecureBytes& passphrase) {
  crypt_device* cd = image_->cd;
  const int key_bytes = crypt_get_volume_key_size(cd);
  if (key_bytes <= 0) fail(Kind::invalid, image_->error_or("the header names no volume key size"));
  OpenedKeyslot opened{SecureBytes(static_cast<size_t>(key_bytes)), -1};
  size_t key_size = opened.volume_key.size();
  int rc = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, reinterpret_cast<char*>(opened.volume_key.data()),
                                &key_size, passphrase.chars(), passphrase.size());
  if (rc == -EPERM) fail(Kind::wrong_passphrase, "no keyslot opens with this passphrase");
  if (rc < 0) fail(Kind::io, image_->error_or("unlocking failed: " + errno_text(rc)));
  opened.volume_key.shrink(key_size);
  opened.keyslot = rc;
  LuksDigest digest;
  if (info_.version == "LUKS1") {
    digest = luks1_digest(image_->read_copy(0, kLuks1HeaderBytes));
  } else {
    const char* metadata = nullptr;
    if (crypt_dump_json(cd, &metadata, 0) < 0 || !metadata) fail(Kind::io, "cannot read the LUKS2 metadata");
    digest = luks2_digest(metadata, opened.keyslot);
  }
  if (!luks_digest_matches(digest, opened.volume_key.span()))
    fail(Kind::wrong_passphrase, "no keyslot opens with this passphrase");
  return opened;
}

UnlockedLuks LuksContainer::unlock(const SecureBytes& passphrase) {
  if (!info_.unsupported.empty())
    fail(Kind::unsupported, "volgate cannot serve this " + info_.version + " container: " + info_.unsupported);
  OpenedKeyslot opened = open_keyslot(passphrase);
  if (opened.volume_key.size() != info_.key_bits / 8)
    fail(Kind::invalid, "keyslot " + std::to_string(opened.keyslot) + " holds a " +
                            std::to_string(opened.volume_key.size() * 8) + "-bit key, not " +
                            std::to_string(info_.key_bits));
  UnlockedLuks unlocked;
  unlocked.volume_key = std::move(opened.volume_key);
  unlocked.keyslot = opened.keyslot;
  unlocked.info = info_;
  return unlocked;
}

int LuksContainer::add_key(const SecureBytes& passphrase, const SecureBytes& new_passphrase,
                           const LuksFormatOptions& kdf) {
  if (info_.version == "LUKS1" && !kdf.pbkdf.empty() && kdf.pbkdf != "pbkdf2")
    fail(Kind::invalid, "LUKS1 keyslots use pbkdf2 only");
  // The new keyslot stores the checked key, never one libcryptsetup merely accepted.
  const OpenedKeyslot opened = open_keyslot(passphrase);
  set_pbkdf(*image_, info_.version == "LUKS2", kdf);
  int rc = crypt_keyslot_add_by_volume_key(image_->cd, CRYPT_ANY_SLOT, opened.volume_key.chars(),
                                           opened.volume_key.size(), new_passphrase.chars(),
                                           new_passphrase.size());
  if (rc < 0) fail(Kind::io, image_->error_or("adding a keyslot failed: " + errno_text(rc)));
  write_back();
  refresh_info();
  return rc;
}

int LuksContainer::remove_key(const SecureBytes& passphrase) {
  const int slot = open_keyslot(passphrase).keyslot;
  if (info_.keyslots.size() <= 1)
    fail(Kind::invalid, "keyslot " + std::to_string(slot) +
                            " is the last one; removing it would make the data unreadable forever");
  if (int rc = crypt_keyslot_destroy(image_->cd, slot); rc < 0)
    fail(Kind::io, image_->error_or("removing keyslot failed: " + errno_text(rc)));
  write_back();
  refresh_info();
  return slot;
}

UnlockedLuks LuksContainer::unlock_with_volume_key(SecureBytes volume_key) {
  if (!info_.unsupported.empty())
    fail(Kind::unsupported, "volgate cannot serve this " + info_.version + " container: " + info_.unsupported);
  // Never the key in a message: its size is all that is said about it.
  if (volume_key.size() != info_.key_bits / 8)
    fail(Kind::wrong_volume_key, "the volume key has " + std::to_string(volume_key.size() * 8) +
                                     " bits; this container's has " + std::to_string(info_.key_bits));
  int rc = crypt_volume_key_verify(image_->cd, volume_key.chars(), volume_key.size());
  if (rc == -EPERM) fail(Kind::wrong_volume_key, "the volume key does not match this container's digest");
  if (rc < 0) fail(Kind::io, image_->error_or("checking the volume key failed: " + errno_text(rc)));
  // libcryptsetup 2.6 takes a digest it cannot compute for a match (see open_keyslot): check
  // the key against the header's digest on our own as well.
  LuksDigest digest;
  if (info_.version == "LUKS1") {
    digest = luks1_digest(image_->read_copy(0, kLuks1HeaderBytes));
  } else {
    if (info_.keyslots.empty()) fail(Kind::invalid, "the header has no keyslot, so no digest to check a key with");
    const char* metadata = nullptr;
    if (crypt_dump_json(image_->cd, &metadata, 0) < 0 || !metadata) fail(Kind::io, "cannot read the LUKS2 metadata");
    digest = luks2_digest(metadata, info_.keyslots.front().index);
  }
  if (!luks_digest_matches(digest, volume_key.span()))
    fail(Kind::wrong_volume_key, "the volume key does not match this container's digest");
  UnlockedLuks unlocked;
  unlocked.volume_key = std::move(volume_key);
  unlocked.info = info_;
  return unlocked;
}

// Writes the units of the header copy that differ from what the device held (all of them up to
// the data offset with `whole`), with FUA, then flushes. The units considered are the ones
// copied from the device and those of the areas the header names now (a new keyslot's area was
// never copied, and is all new).
void LuksContainer::write_back(bool whole) {
  backends::SyncIo io;
  Image& image = *image_;
  // Only the header area: past the data offset, the bytes are data.
  const uint64_t limit = std::min(info_.data_offset, image.device_size);
  std::set<uint64_t> units;
  if (whole) {
    for (uint64_t unit = 0; unit * kUnit < limit; ++unit) units.insert(unit);
  } else {
    for (const auto& [unit, bytes] : image.original) units.insert(unit);
    const LuksLayout now = locate_luks_areas(
        image.device_size, [&](uint64_t offset, uint64_t length) { return image.read_copy(offset, length); });
    for (const ByteRange& area : now.areas) {
      auto [first, end] = image.units_of(area.offset, area.length);
      for (uint64_t unit = first; unit < end; ++unit) units.insert(unit);
    }
  }
  // Runs of consecutive changed units, each written at once.
  std::vector<std::byte> run;
  uint64_t run_start = 0;
  auto write_run = [&] {
    if (run.empty()) return;
    Buffer aligned = Buffer::allocate(run.size());  // for O_DIRECT, as in fetch()
    std::memcpy(aligned.data(), run.data(), run.size());
    if (auto ec = io.write(*device_, run_start, aligned.span(), true))
      fail(Kind::io, "writing the header at offset " + std::to_string(run_start) + ": " + ec.message());
    run.clear();
  };
  for (uint64_t unit : units) {
    const uint64_t at = unit * kUnit;
    if (at >= limit) break;
    auto current = image.read_copy(at, std::min(image.unit_bytes(unit), limit - at));
    auto known = image.original.find(unit);
    const bool changed = whole || known == image.original.end() || known->second != current;
    if (!changed || run_start + run.size() != at || run.size() >= kCopyChunk) write_run();
    if (changed) {
      if (run.empty()) run_start = at;
      run.insert(run.end(), current.begin(), current.end());
    }
    image.original[unit] = std::move(current);
  }
  write_run();
  if (auto ec = io.flush(*device_)) fail(Kind::io, "flushing the header: " + ec.message());
}

}  // namespace volgate::crypto
