#pragma once
// A CHAP secret kept in a file: the gateway reads it to log in, the controller reads the same
// file to set it on tgtd's targets, so both must turn the file into the same bytes.
#include <string>

#include "crypto/secure_bytes.hpp"

namespace volgate::crypto {

// The file's bytes without trailing line breaks (editors add one), NUL-terminated for C APIs
// (the terminator is not counted in secret_length). Throws std::runtime_error naming the path,
// never the content, when the file cannot be read, holds nothing but line breaks, or contains
// a NUL byte (which no C API could pass on).
SecureBytes read_chap_secret(const std::string& path);

// The secret's length without its terminator.
inline size_t secret_length(const SecureBytes& secret) { return secret.empty() ? 0 : secret.size() - 1; }

}  // namespace volgate::crypto
