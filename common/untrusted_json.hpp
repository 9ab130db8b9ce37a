#pragma once
// Parses JSON that comes from a client (a request body) with its nesting bounded.
//
// nlohmann::json parses without recursion, but copying, comparing and dumping a value recurse
// once per level: a body of a few hundred kilobytes of `[[[[...` overflows the stack of
// whichever thread touches it next. Refusing depth while parsing keeps such a value from ever
// existing.
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>

namespace volgate {

// Deeper than any request body the APIs define (they nest four or five levels).
inline constexpr int kMaxRequestJsonDepth = 32;

class UntrustedJsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws UntrustedJsonError saying what is wrong: not JSON, or nested too deep.
nlohmann::json parse_untrusted_json(std::string_view text, int max_depth = kMaxRequestJsonDepth);

}  // namespace volgate
