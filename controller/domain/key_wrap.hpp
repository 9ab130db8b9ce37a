#pragma once
// Wraps volume passphrases with the controller's master key (AES-256-GCM), so the database
// holds only ciphertext: someone with a copy of the database but not the key file learns
// nothing, and a wrapped key moved to another volume's row fails to unwrap (the volume id is
// authenticated with it).
//
// Layout of a wrapped key: version byte (1) | 12-byte random nonce | ciphertext | 16-byte tag.
#include <cstdint>
#include <string>
#include <vector>

#include "crypto/secure_bytes.hpp"

namespace volgate::controller {

class KeyWrap {
 public:
  static constexpr size_t kMasterKeySize = 32;

  // Takes a 32-byte master key. Throws std::invalid_argument for another size.
  explicit KeyWrap(crypto::SecureBytes master_key);
  // Reads the master key file (exactly 32 bytes). Throws std::runtime_error naming the path.
  static KeyWrap from_file(const std::string& path);
  // Writes 32 random bytes to a new file readable by its owner only; refuses to overwrite.
  static void create_key_file(const std::string& path);

  std::vector<uint8_t> wrap(const crypto::SecureBytes& secret, const std::string& volume_id) const;
  // Throws std::runtime_error when the blob was not wrapped by this key for this volume.
  crypto::SecureBytes unwrap(const std::vector<uint8_t>& wrapped, const std::string& volume_id) const;

 private:
  crypto::SecureBytes key_;
};

// A new random LUKS passphrase: 256 random bits written as 64 hex characters, so it can be
// handed to `volgate serve ... luks-key-file=` or cryptsetup as a key file as it is.
crypto::SecureBytes random_passphrase();

}  // namespace volgate::controller
