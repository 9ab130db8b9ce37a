#pragma once
// Parses JSON that comes from a client (a request body) with its nesting bounded.
//
// nlohmann::json parses without recursion, but copying, comparing and dumping a value recurse
// once per level: a body of a few hundred kilobytes of `[[[[...` overflows the stack of
// whichever thread touches it next. Refusing depth while parsing keeps such a value from ever
// existing.
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
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

// The same into another nlohmann::basic_json type (e.g. one whose strings wipe their memory).
template <class Json>
Json parse_untrusted_json_as(std::string_view text, int max_depth = kMaxRequestJsonDepth) {
  struct TooDeep {};
  auto bound = [max_depth](int depth, typename Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw TooDeep{};
    return true;
  };
  Json value;
  try {
    value = Json::parse(text, bound, /*allow_exceptions=*/false);
  } catch (const TooDeep&) {
    throw UntrustedJsonError("The JSON is nested deeper than " + std::to_string(max_depth) + " levels.");
  }
  if (value.is_discarded()) throw UntrustedJsonError("The request body is not valid JSON.");
  return value;
}

}  // namespace volgate
