#include "crypto/luks_container.hpp"

#include <libcryptsetup.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "backends/sync_io.hpp"
#include "common/size.hpp"

namespace volgate::crypto {
namespace {

using Kind = LuksError::Kind;

// Enough for a LUKS1 header and for LUKS2 with cryptsetup's default 16 MiB data offset; a
// container whose data starts later is read a second time up to its data offset.
constexpr uint64_t kFirstRead = 16 * 1024 * 1024;
// LUKS2 allows large metadata areas, but nothing sane needs more than this before its data.
constexpr uint64_t kMaxHeaderArea = 1024ull * 1024 * 1024;
constexpr size_t kCopyChunk = 1024 * 1024;

[[noreturn]] void fail(Kind kind, const std::string& message) { throw LuksError(kind, message); }

std::string errno_text(int rc) { return std::strerror(rc < 0 ? -rc : rc); }

}  // namespace

struct LuksContainer::Image {
  int fd = -1;
  crypt_device* cd = nullptr;
  uint64_t device_size = 0;
  uint64_t copied = 0;              // bytes of the device held in the memory file
  std::vector<std::byte> original;  // those bytes as read, to write back only what changed
  std::string last_error;           // libcryptsetup's latest error message

  ~Image() {
    close_device();
    if (fd >= 0) ::close(fd);
  }

  std::string path() const { return "/proc/self/fd/" + std::to_string(fd); }

  // The primary header magic at 0 (LUKS1 and LUKS2), or a LUKS2 secondary header at one of
  // the offsets the format allows (16 KiB to 4 MiB).
  bool has_luks_signature() const {
    static const unsigned char primary[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
    static const unsigned char secondary[6] = {'S', 'K', 'U', 'L', 0xba, 0xbe};
    auto magic_at = [&](uint64_t at, const unsigned char* magic) {
      return at + 6 <= original.size() && std::memcmp(original.data() + at, magic, 6) == 0;
    };
    if (magic_at(0, primary)) return true;
    for (uint64_t at = 16 * 1024; at <= 4 * 1024 * 1024; at *= 2)
      if (magic_at(at, secondary)) return true;
    return false;
  }

  static std::unique_ptr<Image> create(uint64_t device_size) {
    // libcryptsetup takes a global metadata lock per device; our copy is private to us.
    crypt_metadata_locking(nullptr, 0);
    auto image = std::make_unique<Image>();
    image->device_size = device_size;
    image->fd = ::memfd_create("volgate-luks-header", MFD_CLOEXEC);
    if (image->fd < 0) fail(Kind::io, std::string("memfd_create: ") + std::strerror(errno));
    // As large as the device, so libcryptsetup sees its real size; sparse, so it costs nothing.
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
    return last_error.empty() ? fallback : last_error;
  }

  void open_device() {
    close_device();
    last_error.clear();
    if (int rc = crypt_init(&cd, path().c_str()); rc < 0)
      fail(Kind::io, "cannot open the header copy: " + errno_text(rc));
    crypt_set_log_callback(cd, &Image::log, this);
  }

  // Copies [copied, until) of the device into the memory file.
  void copy_from(backends::BlockDevice& device, backends::SyncIo& io, uint64_t until) {
    std::vector<std::byte> chunk;
    while (copied < until) {
      chunk.resize(static_cast<size_t>(std::min<uint64_t>(kCopyChunk, until - copied)));
      if (auto ec = io.read(device, copied, chunk))
        fail(Kind::io, "reading the header at offset " + std::to_string(copied) + ": " + ec.message());
      if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(copied)) !=
          static_cast<ssize_t>(chunk.size()))
        fail(Kind::io, std::string("writing the header copy: ") + std::strerror(errno));
      original.insert(original.end(), chunk.begin(), chunk.end());
      copied += chunk.size();
    }
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
  image->copy_from(device, io, std::min(device.size(), kFirstRead));
  for (;;) {
    image->open_device();
    if (int rc = crypt_load(image->cd, CRYPT_LUKS, nullptr); rc < 0) {
      // A LUKS signature that does not load is a damaged header, never "not LUKS": that
      // answer lets `format` go ahead without --force.
      if (!image->has_luks_signature())
        fail(Kind::not_luks, "no LUKS header found");
      fail(Kind::invalid, image->error_or("the LUKS header is damaged: " + errno_text(rc)));
    }
    uint64_t data_offset = crypt_get_data_offset(image->cd) * 512;
    if (data_offset <= image->copied) break;
    if (data_offset > kMaxHeaderArea || data_offset > device.size())
      fail(Kind::unsupported, "the LUKS data offset " + std::to_string(data_offset) +
                                  " is beyond the device or over 1 GiB");
    image->copy_from(device, io, data_offset);
  }
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
  if (int rc = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, nullptr, 0, passphrase.chars(),
                                               passphrase.size());
      rc < 0)
    fail(Kind::io, image->error_or("adding the keyslot failed: " + errno_text(rc)));

  // The whole header area goes to the device: the old content there is not ours to keep.
  uint64_t data_offset = crypt_get_data_offset(cd) * 512;
  if (data_offset >= device.size())
    fail(Kind::invalid, "the device (" + format_size(device.size()) +
                            ") has no room for data after a " + format_size(data_offset) + " header");
  image->copied = data_offset;
  LuksContainer container(device, std::move(image));
  container.write_back(true);
  return container;
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
    }
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
    }
    info.keyslots.push_back(ks);
  }
  info_ = std::move(info);
}

UnlockedLuks LuksContainer::unlock(const SecureBytes& passphrase) {
  if (!info_.unsupported.empty())
    fail(Kind::unsupported, "volgate cannot serve this " + info_.version + " container: " + info_.unsupported);
  UnlockedLuks unlocked;
  unlocked.volume_key = SecureBytes(info_.key_bits / 8);
  size_t key_size = unlocked.volume_key.size();
  int rc = crypt_volume_key_get(image_->cd, CRYPT_ANY_SLOT,
                                reinterpret_cast<char*>(unlocked.volume_key.data()), &key_size,
                                passphrase.chars(), passphrase.size());
  if (rc == -EPERM) fail(Kind::wrong_passphrase, "no keyslot opens with this passphrase");
  if (rc < 0) fail(Kind::io, image_->error_or("unlocking failed: " + errno_text(rc)));
  unlocked.volume_key.shrink(key_size);
  unlocked.keyslot = rc;
  unlocked.info = info_;
  return unlocked;
}

int LuksContainer::add_key(const SecureBytes& passphrase, const SecureBytes& new_passphrase,
                           const LuksFormatOptions& kdf) {
  if (info_.version == "LUKS1" && !kdf.pbkdf.empty() && kdf.pbkdf != "pbkdf2")
    fail(Kind::invalid, "LUKS1 keyslots use pbkdf2 only");
  set_pbkdf(*image_, info_.version == "LUKS2", kdf);
  int rc = crypt_keyslot_add_by_passphrase(image_->cd, CRYPT_ANY_SLOT, passphrase.chars(),
                                           passphrase.size(), new_passphrase.chars(),
                                           new_passphrase.size());
  if (rc == -EPERM) fail(Kind::wrong_passphrase, "no keyslot opens with this passphrase");
  if (rc < 0) fail(Kind::io, image_->error_or("adding a keyslot failed: " + errno_text(rc)));
  write_back();
  refresh_info();
  return rc;
}

int LuksContainer::remove_key(const SecureBytes& passphrase) {
  // Activation without a name only checks the passphrase and tells which keyslot it opens.
  int slot = crypt_activate_by_passphrase(image_->cd, nullptr, CRYPT_ANY_SLOT, passphrase.chars(),
                                          passphrase.size(), 0);
  if (slot == -EPERM) fail(Kind::wrong_passphrase, "no keyslot opens with this passphrase");
  if (slot < 0) fail(Kind::io, image_->error_or("checking the passphrase failed: " + errno_text(slot)));
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
  UnlockedLuks unlocked;
  unlocked.volume_key = std::move(volume_key);
  unlocked.info = info_;
  return unlocked;
}

// Writes the parts of the header copy that differ from what the device held (all of it with
// `whole`), in 4 KiB units, with FUA, then flushes.
void LuksContainer::write_back(bool whole) {
  backends::SyncIo io;
  constexpr size_t kUnit = 4096;
  // Only the header area: the copy may extend past the data offset, and those bytes are data.
  std::vector<std::byte> current(static_cast<size_t>(std::min(image_->copied, info_.data_offset)));
  if (::pread(image_->fd, current.data(), current.size(), 0) != static_cast<ssize_t>(current.size()))
    fail(Kind::io, std::string("reading the header copy: ") + std::strerror(errno));
  const std::vector<std::byte>& before = image_->original;
  auto changed = [&](size_t from, size_t to) {
    return whole || before.size() < to || std::memcmp(current.data() + from, before.data() + from, to - from) != 0;
  };
  size_t pos = 0;
  while (pos < current.size()) {
    size_t end = std::min(current.size(), pos + kUnit);
    if (!changed(pos, end)) {
      pos = end;
      continue;
    }
    // Extend the run over the following changed units, for fewer and larger writes.
    while (end < current.size() && changed(end, std::min(current.size(), end + kUnit)))
      end = std::min(current.size(), end + kUnit);
    std::span<const std::byte> run(current.data() + pos, end - pos);
    if (auto ec = io.write(*device_, pos, run, true))
      fail(Kind::io, "writing the header at offset " + std::to_string(pos) + ": " + ec.message());
    pos = end;
  }
  if (auto ec = io.flush(*device_)) fail(Kind::io, "flushing the header: " + ec.message());
  if (image_->original.size() < current.size()) image_->original.resize(current.size());
  std::copy(current.begin(), current.end(), image_->original.begin());
}

}  // namespace volgate::crypto
