#include "common/untrusted_json.hpp"

namespace volgate {

nlohmann::json parse_untrusted_json(std::string_view text, int max_depth) {
  return parse_untrusted_json_as<nlohmann::json>(text, max_depth);
}

}  // namespace volgate
