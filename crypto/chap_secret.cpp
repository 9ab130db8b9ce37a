#include "crypto/chap_secret.hpp"

#include <cstring>
#include <stdexcept>

namespace volgate::crypto {

SecureBytes read_chap_secret(const std::string& path) {
  SecureBytes raw = read_key_file(path);
  size_t length = raw.size();
  while (length > 0 && (raw.chars()[length - 1] == '\n' || raw.chars()[length - 1] == '\r')) --length;
  if (length == 0) throw std::runtime_error(path + ": the CHAP secret is empty");
  if (std::memchr(raw.data(), 0, length)) throw std::runtime_error(path + ": the CHAP secret contains a NUL byte");
  SecureBytes secret(length + 1);
  std::memcpy(secret.data(), raw.data(), length);
  secret.data()[length] = std::byte{0};
  return secret;
}

}  // namespace volgate::crypto
