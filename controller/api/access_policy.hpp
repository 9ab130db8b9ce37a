#pragma once
// Who may do what through the API, as Cinder's and Nova's default policies scope requests:
//  - a member acts only in its token's project: a URL naming another project is refused (400,
//    "Malformed request URL", as Cinder and Nova answer it), objects of other projects are not
//    found (404, never 403, so their ids do not leak; the lookups are the volume service's), and
//    lists show its project's objects only (all_tenants is ignored, as Cinder ignores it for
//    non-admins);
//  - an admin may name any project in the URL and acts in it, lists every project's objects with
//    all_tenants=1, sees every server, and alone may do the admin actions (os-force_detach,
//    os-reset_status, ...), change quotas, and read services and pools (403 for a member).
// What the method and path decide is checked before routing (authorize_request); the rest where
// the request is understood (volume actions, lists, servers).
#include <optional>
#include <string>
#include <string_view>

#include "controller/api/caller.hpp"
#include "controller/api/router.hpp"

namespace volgate::controller {

// The project a request's path names: /v3/{project}/..., /v2.1/{project}/...; empty for paths
// that name none (the versions documents, Nova's bare /v2.1/servers/...).
std::string project_in_path(std::string_view path);

// Throws ApiError 400 when a member's URL names another project than its token's, 403 when the
// request is one only admins may make (whatever object it names, so a 403 says nothing about
// objects). `target` is the path with its query.
void authorize_request(const Caller& caller, std::string_view method, std::string_view target);

// A volume, snapshot, attachment or backup a Cinder path names: /v3/{project}/{kind}/{id}[/...].
struct ObjectInPath {
  std::string project;
  std::string kind;  // volumes, snapshots, attachments, backups
  std::string id;
  size_t project_at = 0;  // where the project starts in the path
};
std::optional<ObjectInPath> object_in_path(std::string_view path);

// The server a Nova path names (/v2.1[/{project}]/servers/{id}[/...]); nullopt for none (the
// lists, /servers/detail).
std::optional<std::string> server_in_path(std::string_view path);

// Cinder's volume admin actions: only an admin may do them.
bool admin_only_volume_action(std::string_view action);
// Throws ApiError 403 ("Only an admin may WHAT.") unless the caller is an admin.
void require_admin(const Caller& caller, std::string_view what);

// Whose objects a list shows: nullopt (every project's) for an admin who asks all_tenants=1;
// otherwise the URL's project.
std::optional<std::string> listed_project(const ApiRequest& request);

// Whether the caller may see and act on a server owned by `owner` (its project; empty: a domain
// no project owns, which only admins see).
bool may_see_server(const Caller& caller, const std::string& owner);

}  // namespace volgate::controller
