// An admin's repairs, in Cinder's shapes: os-reset_status and os-force_delete on volumes
// (POST .../volumes/{id}/action, or DELETE .../volumes/{id}?force=true) and on snapshots
// (POST .../snapshots/{id}/action). They exist for records that no longer say the truth after
// something outside volgate went wrong; the service refuses them while an operation still
// works on the resource, which Cinder cannot tell and volgate can.
#include <nlohmann/json.hpp>

#include "controller/api/access_policy.hpp"
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// The action's value: an object whose keys are all in `allowed` (null is an empty one).
json action_object(const json& value, const std::string& action, std::initializer_list<const char*> allowed) {
  if (value.is_null()) return json::object();
  if (!value.is_object()) bad_request("'" + action + "' takes an object.");
  check_fields(value, action, allowed);
  return value;
}

ApiResponse reset_volume_status(VolumeService& service, const ApiRequest& q, const json& value) {
  json r = action_object(value, "os-reset_status", {"status", "attach_status", "migration_status"});
  const std::string status_text = ascii_lowercase(opt_string(r, "status"));
  const std::string attach_status = ascii_lowercase(opt_string(r, "attach_status"));
  const std::string migration_status = ascii_lowercase(opt_string(r, "migration_status"));
  if (status_text.empty() && attach_status.empty() && migration_status.empty())
    bad_request("Give 'status', 'attach_status' or 'migration_status' to reset.");
  std::optional<VolumeStatus> status;
  if (!status_text.empty()) {
    status = parse_volume_status(status_text);
    if (!status) bad_request("'" + status_text + "' is not a volume status volgate knows.");
  }
  if (!attach_status.empty() && attach_status != "detached") {
    if (attach_status == "attached")
      bad_request("volgate derives a volume's attach status from its attachments; create one to attach it.");
    bad_request("'attach_status' is 'attached' or 'detached', not '" + attach_status + "'.");
  }
  // volgate does not migrate volumes, so the only migration status is none.
  if (!migration_status.empty() && migration_status != "none")
    bad_request("volgate does not migrate volumes; 'migration_status' can only be reset to none.");
  service.reset_volume_status(project_of(q), q.param("id"), status, attach_status == "detached");
  return {202, ""};
}

ApiResponse snapshot_action(VolumeService& service, const ApiRequest& q) {
  json j = parse_json(q.body);
  if (!j.is_object() || j.size() != 1)
    bad_request("A snapshot action body is an object with exactly one action: {\"os-reset_status\": {\"status\": "
                "\"available\"}} or {\"os-force_delete\": {}}.");
  const std::string action = j.begin().key();
  const std::string& project = project_of(q);
  if (action == "os-reset_status") {
    require_admin(q.headers.caller, "reset a snapshot's status");
    json r = action_object(j.begin().value(), action, {"status"});
    const std::string text = ascii_lowercase(opt_string(r, "status"));
    if (text.empty()) bad_request("Give the 'status' to reset the snapshot to.");
    auto status = parse_snapshot_status(text);
    if (!status) bad_request("'" + text + "' is not a snapshot status volgate knows.");
    service.reset_snapshot_status(project, q.param("id"), *status);
    return {202, ""};
  }
  if (action == "os-force_delete") {
    require_admin(q.headers.caller, "force-delete a snapshot");
    action_object(j.begin().value(), action, {});
    service.delete_snapshot(project, q.param("id"), true);
    return {202, ""};
  }
  bad_request("Unknown or unsupported snapshot action '" + action + "' (volgate offers os-reset_status and "
              "os-force_delete).");
}

}  // namespace

std::optional<ApiResponse> admin_volume_action(VolumeService& service, const ApiRequest& q, const std::string& action,
                                               const json& value) {
  if (action == "os-reset_status") return reset_volume_status(service, q, value);
  if (action == "os-force_delete") {
    action_object(value, action, {});
    service.delete_volume(project_of(q), q.param("id"), true);
    return ApiResponse{202, ""};
  }
  return std::nullopt;
}

void add_snapshot_action_routes(Router& router, VolumeService& service) {
  router.add("POST", "/v3/{project}/snapshots/{id}/action",
             [&service](const ApiRequest& q) { return snapshot_action(service, q); });
}

}  // namespace volgate::controller
