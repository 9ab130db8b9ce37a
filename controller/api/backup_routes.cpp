// Cinder's backup API over the volume service's backup flows:
//   POST /v3/{project}/backups                 {"backup": {"volume_id", "name", "description",
//                                               "incremental", "force", ...}}
//   GET  /v3/{project}/backups[/detail]        filters name, status, volume_id; sort, paging
//   GET|PUT|DELETE /v3/{project}/backups/{id}
//   POST /v3/{project}/backups/{id}/restore    {"restore": {"volume_id" | "name"}}
// Fields of Cinder's schema volgate has no use for are accepted when null or empty (cinderclient
// sends container and snapshot_id as null); asking for something it does not do (a container,
// backing up a snapshot) is refused by name.
#include <set>

#include "controller/api/access_policy.hpp"
#include "controller/api/api_error.hpp"
#include "controller/api/list_query.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

json null_if_empty(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

bool has_children(const std::vector<Backup>& backups, const std::string& id) {
  for (const auto& b : backups)
    if (b.parent_id == id) return true;
  return false;
}

json backup_view(VolumeService& service, const Backup& b, bool has_dependents, ApiVersion version) {
  json j = {{"id", b.id},
            {"name", null_if_empty(b.name)},
            {"description", null_if_empty(b.description)},
            {"volume_id", b.volume_id},
            {"status", to_string(b.status)},
            {"size", b.size_gb},
            {"object_count", b.object_count},
            {"container", nullptr},  // one repository per controller, no containers
            {"availability_zone", null_if_empty(b.availability_zone)},
            {"is_incremental", !b.parent_id.empty()},
            {"has_dependent_backups", has_dependents},
            {"snapshot_id", nullptr},
            {"data_timestamp", b.data_timestamp.empty() ? json(b.created_at) : json(b.data_timestamp)},
            {"fail_reason", b.error_message.empty() ? json(nullptr) : json(without_paths(b.error_message))},
            {"links", json::array()},
            {"created_at", b.created_at},
            {"updated_at", b.updated_at}};
  if (version.since(18)) j["os-backup-project-attr:project_id"] = b.project;
  if (version.since(43)) j["metadata"] = json::object();
  // volgate's own: what it added to the repository, its parent, and how far a copy is.
  j["volgate:stored_bytes"] = b.stored_bytes;
  if (!b.parent_id.empty()) j["volgate:parent_id"] = b.parent_id;
  if (b.encrypted) j["volgate:encrypted"] = true;
  if (!b.restore_volume_id.empty()) j["volgate:restore_volume_id"] = b.restore_volume_id;
  if (b.status == BackupStatus::creating || b.status == BackupStatus::restoring)
    if (auto p = service.progress(b.id)) j["volgate:progress"] = static_cast<int>(*p);
  return j;
}

ListPage<Backup> query_backups(VolumeService& service, const ApiRequest& q, const std::vector<Backup>& all) {
  static const std::set<std::string> filters = {"name", "status", "volume_id"};
  static const std::set<std::string> sort_keys = {"id", "name", "size", "status", "volume_id", "created_at",
                                                  "updated_at", "data_timestamp"};
  (void)service;
  auto field = [](const Backup& b, const std::string& key) -> json {
    if (key == "id") return b.id;
    if (key == "name") return b.name;
    if (key == "size") return b.size_gb;
    if (key == "status") return to_string(b.status);
    if (key == "volume_id") return b.volume_id;
    if (key == "created_at") return b.created_at;
    if (key == "data_timestamp") return b.data_timestamp;
    return b.updated_at;
  };
  return apply_list_query<Backup>(parse_list_query(q, filters, sort_keys), all, field,
                                  [](const Backup& b) { return b.id; });
}

ApiResponse create_backup(VolumeService& service, const ApiRequest& q) {
  json b = parse_body(q.body, "backup",
                      {"volume_id", "container", "name", "description", "display_name", "display_description",
                       "incremental", "force", "snapshot_id", "metadata", "availability_zone"});
  const std::string volume_id = opt_string(b, "volume_id");
  if (volume_id.empty()) bad_request("'volume_id' is required.");
  check_length(volume_id, "volume_id");
  if (!opt_string(b, "container").empty())
    bad_request("volgate keeps every backup in its one repository; leave 'container' out.");
  if (!opt_string(b, "snapshot_id").empty())
    bad_request("volgate backs up volumes, not snapshots; leave 'snapshot_id' out.");
  if (b.contains("metadata") && !metadata_from_json(b["metadata"]).empty())
    bad_request("Backup metadata is not supported by volgate; leave 'metadata' empty.");
  const std::string zone = opt_string(b, "availability_zone");
  if (!zone.empty())
    bad_request("volgate has one backup repository, in no availability zone; leave 'availability_zone' out.");
  auto name = b.contains("name") ? changed_string(b, "name") : changed_string(b, "display_name");
  auto description = b.contains("description") ? changed_string(b, "description")
                                               : changed_string(b, "display_description");
  check_length(name.value_or(""), "name");
  check_length(description.value_or(""), "description");
  const Backup created =
      service.create_backup(project_of(q), volume_id, name.value_or(""), description.value_or(""),
                            opt_boolean(b, "incremental").value_or(false), opt_boolean(b, "force").value_or(false));
  // Cinder answers a create with the short view.
  return json_response(202, {{"backup", {{"id", created.id}, {"name", null_if_empty(created.name)},
                                         {"links", json::array()}}}});
}

}  // namespace

void add_backup_routes(Router& r, VolumeService& service) {
  auto list = [&service](bool detail) {
    return [&service, detail](const ApiRequest& q) {
      const auto all = service.list_backups(listed_project(q));
      ListPage<Backup> page = query_backups(service, q, all);
      json items = json::array();
      for (const auto& b : page.items) {
        if (detail)
          items.push_back(backup_view(service, b, has_children(all, b.id), q.version));
        else
          items.push_back({{"id", b.id}, {"name", null_if_empty(b.name)}, {"links", json::array()}});
      }
      json answer = {{"backups", items}};
      if (q.version.since(45) && q.query_flag("with_count")) answer["count"] = page.total;
      return json_response(200, answer);
    };
  };
  r.add("GET", "/v3/{project}/backups", list(false));
  r.add("GET", "/v3/{project}/backups/detail", list(true));
  r.add("POST", "/v3/{project}/backups", [&service](const ApiRequest& q) { return create_backup(service, q); });
  r.add("GET", "/v3/{project}/backups/{id}", [&service](const ApiRequest& q) {
    const Backup b = service.get_backup(project_of(q), q.param("id"));
    const bool dependents = has_children(service.list_backups(b.project), b.id);
    return json_response(200, {{"backup", backup_view(service, b, dependents, q.version)}});
  });
  r.add("PUT", "/v3/{project}/backups/{id}", [&service](const ApiRequest& q) {
    if (!q.version.since(9)) not_found("Updating a backup needs microversion 3.9 or later.");
    json b = parse_body(q.body, "backup", {"name", "description", "metadata"});
    if (b.contains("metadata") && !metadata_from_json(b["metadata"]).empty())
      bad_request("Backup metadata is not supported by volgate; leave 'metadata' empty.");
    ResourceChanges changes;
    changes.name = changed_string(b, "name");
    changes.description = changed_string(b, "description");
    if (changes.name) check_length(*changes.name, "name");
    if (changes.description) check_length(*changes.description, "description");
    const Backup updated = service.update_backup(project_of(q), q.param("id"), changes);
    const bool dependents = has_children(service.list_backups(updated.project), updated.id);
    return json_response(200, {{"backup", backup_view(service, updated, dependents, q.version)}});
  });
  r.add("DELETE", "/v3/{project}/backups/{id}", [&service](const ApiRequest& q) {
    service.delete_backup(project_of(q), q.param("id"));
    return ApiResponse{202, ""};
  });
  r.add("POST", "/v3/{project}/backups/{id}/restore", [&service](const ApiRequest& q) {
    json body = parse_body(q.body, "restore", {"volume_id", "name"});
    const std::string volume_id = opt_string(body, "volume_id");
    std::string name = opt_string(body, "name");
    check_length(volume_id, "volume_id");
    check_length(name, "name");
    if (!volume_id.empty()) name.clear();  // as Cinder: the name is for a new volume only
    const std::string& project = project_of(q);
    const std::string target = service.restore_backup(project, q.param("id"), volume_id, name);
    const Volume v = service.get_volume(project, target);
    return json_response(202, {{"restore", {{"backup_id", q.param("id")}, {"volume_id", target},
                                            {"volume_name", v.name}}}});
  });
  r.add("POST", "/v3/{project}/backups/{id}/action", [&service](const ApiRequest& q) -> ApiResponse {
    json j = parse_json(q.body);
    const std::string action = j.is_object() && j.size() == 1 ? j.begin().key() : std::string();
    const std::string& project = project_of(q);
    service.get_backup(project, q.param("id"));  // 404 first, for another project's
    if (action == "os-reset_status" || action == "os-force_delete")
      require_admin(q.headers.caller, "do " + action);
    // An admin's repairs (cinder backup-reset-state, backup-delete --force), as for volumes and
    // snapshots (admin_actions.cpp): refused while an operation works on the backup.
    const json& value = j.is_object() && j.size() == 1 ? j.begin().value() : json();
    if (!value.is_null() && !value.is_object()) bad_request("'" + action.substr(0, 64) + "' takes an object.");
    if (action == "os-reset_status") {
      check_fields(value.is_null() ? json::object() : value, action, {"status"});
      const std::string text = ascii_lowercase(value.is_object() ? opt_string(value, "status") : std::string());
      if (text.empty()) bad_request("Give the 'status' to reset the backup to.");
      auto status = parse_backup_status(text);
      if (!status) bad_request("'" + text.substr(0, 64) + "' is not a backup status volgate knows.");
      service.reset_backup_status(project, q.param("id"), *status);
      return ApiResponse{202, ""};
    }
    if (action == "os-force_delete") {
      check_fields(value.is_null() ? json::object() : value, action, {});
      service.delete_backup(project, q.param("id"), true);
      return ApiResponse{202, ""};
    }
    bad_request("Unknown or unsupported backup action '" + action.substr(0, 64) +
                "' (volgate offers os-reset_status and os-force_delete).");
  });
}

}  // namespace volgate::controller
