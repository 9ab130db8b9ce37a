#include "common/untrusted_json.hpp"

#include <string>

namespace volgate {
namespace {

struct TooDeep {};

}  // namespace

nlohmann::json parse_untrusted_json(std::string_view text, int max_depth) {
  using nlohmann::json;
  auto bound = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw TooDeep{};
    return true;
  };
  json value;
  try {
    value = json::parse(text, bound, /*allow_exceptions=*/false);
  } catch (const TooDeep&) {
    throw UntrustedJsonError("The JSON is nested deeper than " + std::to_string(max_depth) + " levels.");
  }
  if (value.is_discarded()) throw UntrustedJsonError("The request body is not valid JSON.");
  return value;
}

}  // namespace volgate
