#pragma once
// A LUKS1 or LUKS2 container on any BlockDevice, through libcryptsetup.
//
// libcryptsetup wants a path, and a volume on RBD or iSCSI has none. So the parts of the device
// libcryptsetup reads (the header copies and the keyslots' key material, found by
// locate_luks_areas) are copied into an anonymous in-memory file the size of the device, and
// libcryptsetup works on that copy. The rest of the file is a hole: it costs nothing and is
// never read from the device, however far out the header puts the data. Only the operations
// that are meant to change the header (format, add-key, remove-key) write the changed parts of
// the copy back to the device.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/block_device.hpp"
#include "crypto/luks_error.hpp"
#include "crypto/secure_bytes.hpp"

namespace volgate::crypto {

struct LuksKeyslot {
  int index = 0;
  std::string pbkdf;  // "argon2id", "argon2i" or "pbkdf2"
  uint32_t iterations = 0;
  uint32_t memory_kib = 0;
  uint32_t threads = 0;  // argon2's parallel lanes
};

struct LuksInfo {
  std::string version;  // "LUKS1" or "LUKS2"
  std::string uuid;
  std::string cipher;   // e.g. "aes-xts-plain64"
  uint32_t key_bits = 0;
  uint32_t sector_size = 512;
  uint64_t data_offset = 0;   // bytes from the start of the device
  uint64_t payload_size = 0;  // bytes of decrypted data
  uint64_t iv_offset = 0;     // in 512-byte sectors (LUKS2 iv_tweak)
  std::vector<LuksKeyslot> keyslots;  // active ones
  // PBKDF2 iterations of the volume key digest, which every unlock attempt pays on top of its
  // keyslot's PBKDF (the largest, if LUKS2 has several digests); 0 if unknown.
  uint32_t digest_iterations = 0;
  // Why volgate cannot serve this container; empty when it can.
  std::string unsupported;
};

struct LuksFormatOptions {
  std::string type = "luks2";          // luks2 or luks1
  std::string cipher = "aes-xts-plain64";
  uint32_t key_bits = 512;             // 256 (AES-128-XTS) or 512 (AES-256-XTS)
  uint32_t sector_size = 0;            // 0: 4096 for LUKS2 when the size allows, 512 for LUKS1
  std::string pbkdf;                   // empty: argon2id for LUKS2, pbkdf2 for LUKS1
  uint32_t iter_time_ms = 0;           // 0: libcryptsetup's default (2 s)
  uint32_t pbkdf_memory_kib = 0;       // 0: libcryptsetup's default (up to 1 GiB)
  uint32_t pbkdf_iterations = 0;       // fixed cost instead of a timed benchmark (0: benchmark)
};

// The volume key and everything the data path needs to use it.
struct UnlockedLuks {
  LuksInfo info;
  SecureBytes volume_key;
  int keyslot = -1;
};

class LuksContainer {
 public:
  struct Image;  // the in-memory header copy, private to the implementation

  // Reads and parses the header of `device`. Throws LuksError.
  static LuksContainer load(backends::BlockDevice& device);
  // Writes a new header with one keyslot for `passphrase`. Throws LuksError.
  static LuksContainer format(backends::BlockDevice& device, const LuksFormatOptions& options,
                              const SecureBytes& passphrase);

  LuksContainer(LuksContainer&&) noexcept;
  LuksContainer& operator=(LuksContainer&&) noexcept;
  ~LuksContainer();

  const LuksInfo& info() const { return info_; }

  // Recovers the volume key; refuses a container volgate cannot serve correctly.
  UnlockedLuks unlock(const SecureBytes& passphrase);
  // The same with the volume key itself (no key derivation: milliseconds, where a keyslot's
  // PBKDF takes a second or more). The key is checked against the header's digest, so a wrong
  // one is refused here instead of serving garbage. Takes the key, as the result holds it.
  UnlockedLuks unlock_with_volume_key(SecureBytes volume_key);
  // Adds a keyslot for `new_passphrase`, unlocking with `passphrase`; returns its index. The
  // PBKDF fields of `kdf` choose the new keyslot's key derivation (the rest is ignored).
  int add_key(const SecureBytes& passphrase, const SecureBytes& new_passphrase,
              const LuksFormatOptions& kdf = {});
  // Removes the keyslot `passphrase` opens; returns its index. Refuses the last keyslot.
  int remove_key(const SecureBytes& passphrase);

 private:
  struct OpenedKeyslot {
    SecureBytes volume_key;
    int keyslot;
  };

  LuksContainer(backends::BlockDevice& device, std::unique_ptr<Image> image);
  OpenedKeyslot open_keyslot(const SecureBytes& passphrase);
  void refresh_info();
  void write_back(bool whole = false);

  backends::BlockDevice* device_;
  std::unique_ptr<Image> image_;
  LuksInfo info_;
};

}  // namespace volgate::crypto
