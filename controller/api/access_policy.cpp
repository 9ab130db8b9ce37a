#include "controller/api/access_policy.hpp"

#include <array>
#include <vector>

#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"

namespace volgate::controller {

std::string_view to_string(Role role) { return role == Role::admin ? "admin" : "member"; }

std::optional<Role> role_from_string(std::string_view text) {
  if (text == "admin") return Role::admin;
  if (text == "member") return Role::member;
  return std::nullopt;
}

bool is_project_name(std::string_view project) {
  bool valid = !project.empty() && project.size() <= 64;
  for (char c : project) valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_');
  return valid;
}

namespace {

struct PathParts {
  std::string project;                 // empty: the path names none
  std::vector<std::string> resource;  // the segments after the project (or after /v2.1)
};

PathParts parts_of(std::string_view path) {
  const auto segments = split_path(path);
  PathParts parts;
  if (segments.size() < 2) return parts;
  size_t first = 2;
  if (segments[0] == "v3") {
    parts.project = segments[1];
  } else if (segments[0] == "v2.1") {
    // Nova's routes come with and without the project: /v2.1/servers/... names none.
    if (segments[1] == "servers") first = 1;
    else parts.project = segments[1];
  } else {
    return parts;
  }
  parts.resource.assign(segments.begin() + static_cast<std::ptrdiff_t>(first), segments.end());
  return parts;
}

// The decoded names and values of a query string, in order.
std::vector<std::pair<std::string, std::string>> query_items(std::string_view query) {
  const std::string body;
  const RequestHeaders headers;
  ApiRequest request{"", "", std::string(query), body, {}, kMinApiVersion, headers};
  return request.query_items();
}

}  // namespace

std::string project_in_path(std::string_view path) { return parts_of(path.substr(0, path.find('?'))).project; }

void require_admin(const Caller& caller, std::string_view what) {
  if (!caller.admin()) forbidden("Only an admin may " + std::string(what) + ".");
}

void authorize_request(const Caller& caller, std::string_view method, std::string_view target) {
  if (caller.admin()) return;
  const size_t q = target.find('?');
  const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  const PathParts parts = parts_of(target.substr(0, q));
  if (!parts.project.empty() && parts.project != caller.project)
    bad_request("Malformed request URL: the URL's project '" + parts.project.substr(0, 64) +
                "' is not this token's project '" + caller.project + "'.");
  if (parts.resource.empty() || target.starts_with("/v2.1")) return;
  const std::string& resource = parts.resource[0];
  if (resource == "os-services") require_admin(caller, "list the services");
  if (resource == "scheduler-stats") require_admin(caller, "list the pools");
  if (resource == "os-quota-sets") {
    if (method != "GET") require_admin(caller, "change quotas");
    const bool defaults = parts.resource.size() > 2 && parts.resource[2] == "defaults";
    if (parts.resource.size() > 1 && parts.resource[1] != caller.project && !defaults)
      require_admin(caller, "see another project's quotas");
  }
  if (resource == "limits") {
    // Every occurrence: a name given twice must not pass here with one value and reach the
    // route with the other.
    for (const auto& [key, value] : query_items(query))
      if ((key == "tenant_id" || key == "project_id") && value != caller.project)
        require_admin(caller, "see another project's limits");
  }
}

std::optional<ObjectInPath> object_in_path(std::string_view path) {
  path = path.substr(0, path.find('?'));
  if (!path.starts_with("/v3/")) return std::nullopt;
  const auto segments = split_path(path);
  if (segments.size() < 4) return std::nullopt;
  const std::string& kind = segments[2];
  if (kind != "volumes" && kind != "snapshots" && kind != "attachments" && kind != "backups") return std::nullopt;
  if (segments[3] == "detail" || segments[3] == "summary") return std::nullopt;
  return ObjectInPath{.project = segments[1], .kind = kind, .id = segments[3], .project_at = path.find(segments[1], 3)};
}

std::optional<std::string> server_in_path(std::string_view path) {
  const PathParts parts = parts_of(path.substr(0, path.find('?')));
  if (!path.starts_with("/v2.1/") || parts.resource.size() < 2 || parts.resource[0] != "servers" ||
      parts.resource[1] == "detail")
    return std::nullopt;
  return parts.resource[1];
}

bool admin_only_volume_action(std::string_view action) {
  static constexpr std::array<std::string_view, 5> kAdminActions = {
      "os-force_detach", "os-reset_status", "os-force_delete", "os-migrate_volume", "os-migrate_volume_completion"};
  for (auto a : kAdminActions)
    if (a == action) return true;
  return false;
}

std::optional<std::string> listed_project(const ApiRequest& request) {
  if (request.headers.caller.admin() && request.query_flag("all_tenants")) return std::nullopt;
  return project_of(request);
}

bool may_see_server(const Caller& caller, const std::string& owner) {
  return caller.admin() || (!owner.empty() && owner == caller.project);
}

}  // namespace volgate::controller
