#pragma once
// Parses JSON that comes from a client (a request body) with its nesting bounded and each
// object's keys unique.
//
// nlohmann::json parses without recursion, but copying, comparing and dumping a value recurse
// once per level: a body of a few hundred kilobytes of `[[[[...` overflows the stack of
// whichever thread touches it next. Refusing depth while parsing keeps such a value from ever
// existing. A key given twice in one object is refused too: the parser would keep the last,
// while a proxy, a log reader or a check that looked at the first would see another request
// (`{"target": {harmless}, "target": {another}}`). No client the APIs serve sends one.
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace volgate {

// Deeper than any request body the APIs define (they nest four or five levels).
inline constexpr int kMaxRequestJsonDepth = 32;

class UntrustedJsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws UntrustedJsonError saying what is wrong: not JSON, nested too deep, or a key twice.
nlohmann::json parse_untrusted_json(std::string_view text, int max_depth = kMaxRequestJsonDepth);

// The same into another nlohmann::basic_json type (e.g. one whose strings wipe their memory).
template <class Json>
Json parse_untrusted_json_as(std::string_view text, int max_depth = kMaxRequestJsonDepth) {
  using Event = typename Json::parse_event_t;
  struct TooDeep {};
  struct DuplicateKey {
    std::string key;
  };
  std::vector<std::unordered_set<std::string>> keys_of_open_objects;
  auto check = [max_depth, &keys_of_open_objects](int depth, Event event, Json& parsed) {
    if ((event == Event::object_start || event == Event::array_start) && depth >= max_depth) throw TooDeep{};
    if (event == Event::object_start) keys_of_open_objects.emplace_back();
    if (event == Event::object_end) keys_of_open_objects.pop_back();
    if (event == Event::key) {
      const auto& key = parsed.template get_ref<const typename Json::string_t&>();
      if (!keys_of_open_objects.back().emplace(key.data(), key.size()).second)
        throw DuplicateKey{std::string(key.data(), key.size())};
    }
    return true;
  };
  Json value;
  try {
    value = Json::parse(text, check, /*allow_exceptions=*/false);
  } catch (const TooDeep&) {
    throw UntrustedJsonError("The JSON is nested deeper than " + std::to_string(max_depth) + " levels.");
  } catch (const DuplicateKey& e) {
    // Shown escaped (ASCII only) and cut short: the key is the client's, any bytes and length.
    std::string shown = nlohmann::json(e.key).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    if (shown.size() > 66) shown = shown.substr(0, 62) + "...\"";
    throw UntrustedJsonError("The JSON gives the key " + shown + " twice in one object.");
  }
  if (value.is_discarded()) throw UntrustedJsonError("The request body is not valid JSON.");
  return value;
}

}  // namespace volgate
