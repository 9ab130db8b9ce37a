#pragma once
// The one error type of the LUKS code: what went wrong, in words for the operator, and which
// kind of problem it is, for callers that react differently (e.g. "not LUKS" lets format go on).
#include <stdexcept>
#include <string>

namespace volgate::crypto {

class LuksError : public std::runtime_error {
 public:
  enum class Kind { not_luks, wrong_passphrase, wrong_volume_key, unsupported, invalid, io };
  LuksError(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  const Kind kind;
};

}  // namespace volgate::crypto
