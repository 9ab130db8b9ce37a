#pragma once
// The check a LUKS header keeps of its volume key: PBKDF2 of the key with a salt and an
// iteration count, compared with a stored digest.
//
// volgate checks every key libcryptsetup hands out against it, on its own: libcryptsetup 2.6
// takes a digest it cannot compute (an unknown hash, a salt or digest of the wrong length) for
// a match, and then returns a wrong key for any passphrase.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace volgate::crypto {

struct LuksDigest {
  std::string hash;  // as the header names it, e.g. "sha256"
  uint32_t iterations = 0;
  std::vector<std::byte> salt;
  std::vector<std::byte> digest;
};

// The LUKS1 digest, from the binary header (its first 592 bytes at least).
LuksDigest luks1_digest(std::span<const std::byte> binary_header);

// The LUKS2 digest that covers `keyslot`, from the header's JSON metadata (as libcryptsetup
// loaded it). Throws LuksError (invalid) naming the field when there is none or it is malformed.
LuksDigest luks2_digest(std::string_view metadata_json, int keyslot);

// Whether `volume_key` matches. Throws LuksError (invalid) naming what cannot be computed.
bool luks_digest_matches(const LuksDigest& digest, std::span<const std::byte> volume_key);

}  // namespace volgate::crypto
