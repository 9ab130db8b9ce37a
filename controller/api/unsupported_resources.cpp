// Cinder resources volgate deliberately does not offer. A client that asks for one (`cinder
// group-list`) gets Cinder's answer for an API that is not there, a 404 itemNotFound, with a
// message that says it is not offered here rather than that the path is mistyped.
#include <map>
#include <string_view>

#include "controller/api/api_error.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

// The first path segment after /v3/{project}/ -> what it is, in the message.
const std::map<std::string_view, std::string_view>& not_offered() {
  static const std::map<std::string_view, std::string_view> resources = {
      {"capabilities", "backend capabilities"},
      {"cgsnapshots", "consistency group snapshots"},
      {"clusters", "clusters"},
      {"consistencygroups", "consistency groups"},
      {"default-types", "per-project default volume types"},
      {"extensions", "the extensions list"},
      {"group_snapshots", "group snapshots"},
      {"group_types", "group types"},
      {"groups", "volume groups"},
      {"manageable_snapshots", "managing existing snapshots"},
      {"manageable_volumes", "managing existing volumes"},
      {"messages", "user messages"},
      {"os-backup-services", "backup services"},
      {"os-hosts", "hosts"},
      {"os-quota-class-sets", "quota classes"},
      {"os-snapshot-manage", "managing existing snapshots"},
      {"os-volume-manage", "managing existing volumes"},
      {"os-volume-transfer", "volume transfers"},
      {"os-volume-type-access", "private volume types"},
      {"qos-specs", "QoS specifications"},
      {"resource_filters", "the resource filters list"},
      {"volume-transfers", "volume transfers"},
      {"workers", "cleanup workers"},
  };
  return resources;
}

}  // namespace

ApiResponse answer_unmatched(const ApiRequest& request) {
  const auto parts = split_path(request.path);
  if (parts.size() >= 3 && parts[0] == "v3") {
    auto it = not_offered().find(parts[2]);
    if (it != not_offered().end())
      not_found("volgate does not offer " + std::string(it->second) + " (Cinder's '" + std::string(it->first) +
                "' API); see the README for what its API supports.");
  }
  not_found("Unknown path " + request.path + ".");
}

}  // namespace volgate::controller
