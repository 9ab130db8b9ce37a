#pragma once
// SHA-256 of a buffer in one call (OpenSSL), and bytes as lower-case hex: what the known-answer
// checks, the API's token digests and the backup chunks' names all use.
#include <array>
#include <cstddef>
#include <span>
#include <string>

namespace volgate::crypto {

using Sha256Digest = std::array<unsigned char, 32>;

// Throws std::runtime_error if OpenSSL fails.
Sha256Digest sha256(std::span<const std::byte> data);

std::string to_hex(std::span<const unsigned char> bytes);

}  // namespace volgate::crypto
