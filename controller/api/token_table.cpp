#include "controller/api/token_table.hpp"

#include <openssl/crypto.h>

#include <stdexcept>

#include "crypto/sha256.hpp"

namespace volgate::controller {

TokenTable::Digest TokenTable::digest_of(std::string_view token) {
  return crypto::sha256(std::as_bytes(std::span(token.data(), token.size())));
}

std::optional<TokenTable::Digest> TokenTable::digest_from_hex(std::string_view hex) {
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Digest digest{};
  if (hex.size() != digest.size() * 2) return std::nullopt;
  for (size_t i = 0; i < digest.size(); ++i) {
    const int hi = value(hex[2 * i]), lo = value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    digest[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return digest;
}

void TokenTable::add(const Digest& digest, Caller caller) {
  for (const auto& e : entries_)
    if (e.digest == digest)
      throw std::invalid_argument("the same token is given twice (for project '" + e.caller.project + "' and '" +
                                  caller.project + "')");
  entries_.push_back({digest, std::move(caller)});
}

std::optional<Caller> TokenTable::find(std::string_view token) const {
  if (token.empty()) return std::nullopt;
  const Digest presented = digest_of(token);
  // Every entry is compared, whichever matches: the time taken says nothing about which did.
  const Entry* match = nullptr;
  for (const auto& e : entries_)
    if (CRYPTO_memcmp(e.digest.data(), presented.data(), presented.size()) == 0) match = &e;
  if (!match) return std::nullopt;
  return match->caller;
}

}  // namespace volgate::controller
