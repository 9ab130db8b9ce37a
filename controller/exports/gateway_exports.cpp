#include "controller/exports/gateway_exports.hpp"

namespace volgate::controller {

std::vector<GatewayExports::Served> GatewayControlExports::list() {
  std::vector<Served> out;
  for (const auto& e : client_.list_exports()) out.push_back({e.name, e.connections});
  return out;
}

}  // namespace volgate::controller
