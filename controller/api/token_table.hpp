#pragma once
// The API's tokens, each with the project and role it grants (config: token_file, the
// operator's admin token, and the `tokens` list). The table holds SHA-256 digests only, never a
// token: a token read from a file is hashed and wiped at once, and a config may give the digest
// alone (`token_sha256`). A request's token is hashed where it lies and compared with every
// digest in constant time. (Tokens are long random strings, not passwords: a plain digest is as
// hard to reverse as the token is to guess.)
#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "controller/api/caller.hpp"

namespace volgate::controller {

class TokenTable {
 public:
  using Digest = std::array<unsigned char, 32>;

  static Digest digest_of(std::string_view token);
  // 64 hex digits (either case); nullopt otherwise.
  static std::optional<Digest> digest_from_hex(std::string_view hex);

  // Throws std::invalid_argument when the digest is there already: one token granting two
  // projects or roles would be whichever came first.
  void add(const Digest& digest, Caller caller);
  // Who `token` is; nullopt for an unknown (or empty) token.
  std::optional<Caller> find(std::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Digest digest;
    Caller caller;
  };
  std::vector<Entry> entries_;
};

}  // namespace volgate::controller
