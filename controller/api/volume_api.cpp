#include "controller/api/volume_api.hpp"

#include <spdlog/spdlog.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "common/untrusted_json.hpp"
#include "controller/api/access_policy.hpp"
#include "controller/api/api_error.hpp"
#include "controller/api/attachment_view.hpp"
#include "controller/api/list_query.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"
#include "controller/compute/action_log.hpp"
#include "controller/metrics/controller_metrics.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// Sizes beyond this are typing mistakes, not volumes (1 PiB).
constexpr uint64_t kMaxSizeGb = 1024 * 1024;

// Paths, methods and ids are echoed in messages, and a client may send any bytes in them:
// json_text() writes bytes that are not UTF-8 as U+FFFD instead of throwing.
std::string to_text(const json& body) { return json_text(body); }

ApiResponse ok(int status, const json& body) { return json_response(status, body); }

json null_if_empty(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

std::string backend_host(const std::string& pool) { return "volgate@" + pool; }

// Cinder's detailed volume view at the request's microversion: fields appear from the version
// that introduced them.
json volume_view(VolumeService& service, const Volume& v, ApiVersion version) {
  json j = {{"id", v.id},
            {"name", v.name},
            {"description", v.description},
            {"size", v.size_gb},
            {"status", to_string(v.status)},
            {"availability_zone", v.availability_zone},
            {"volume_type", v.volume_type},
            {"snapshot_id", null_if_empty(v.snapshot_id)},
            {"source_volid", null_if_empty(v.source_volid)},
            {"encrypted", v.encrypted},
            {"bootable", "false"},
            {"multiattach", service.multiattach(v)},
            {"attachments", volume_attachments_view(service, v)},
            {"metadata", v.metadata},
            {"links", json::array()},
            {"user_id", nullptr},  // volgate has projects, not users
            {"consistencygroup_id", nullptr},
            {"replication_status", "disabled"},
            {"created_at", v.created_at},
            {"updated_at", v.updated_at},
            {"os-vol-tenant-attr:tenant_id", v.project},
            {"os-vol-host-attr:host", v.pool.empty() ? json(nullptr) : json(backend_host(v.pool) + "#" + v.pool)}};
  if (version.since(13)) j["group_id"] = nullptr;
  if (version.since(21)) j["provider_id"] = nullptr;
  if (version.since(48)) {
    // Each volume has an export of its own: nothing is shared that a host would need to lock.
    j["shared_targets"] = false;
    j["service_uuid"] = v.pool.empty() ? json(nullptr) : json(backend_host(v.pool));
  }
  // volgate's own attributes, prefixed so that they never clash with Cinder's.
  if (!v.image.empty()) j["volgate:image"] = v.image;
  if (!v.error_message.empty()) j["volgate:error"] = without_paths(v.error_message);
  std::string target = service.export_target(v);
  if (!target.empty() && v.status != VolumeStatus::creating) j["volgate:export_target"] = target;
  if (v.status == VolumeStatus::creating || v.status == VolumeStatus::uploading)
    if (auto p = service.progress(v.id)) j["volgate:progress"] = static_cast<int>(*p);
  return j;
}

json snapshot_view(const Snapshot& s, ApiVersion version) {
  json j = {{"id", s.id},
            {"name", s.name},
            {"description", s.description},
            {"volume_id", s.volume_id},
            {"size", s.size_gb},
            {"status", to_string(s.status)},
            {"metadata", json::object()},
            {"created_at", s.created_at},
            {"updated_at", s.updated_at},
            {"os-extended-snapshot-attributes:project_id", s.project},
            {"os-extended-snapshot-attributes:progress",
             s.status == SnapshotStatus::available ? "100%" : "0%"}};
  if (version.since(14)) j["group_snapshot_id"] = nullptr;
  if (version.since(41)) j["user_id"] = nullptr;
  if (!s.error_message.empty()) j["volgate:error"] = without_paths(s.error_message);
  return j;
}

json quota_view(const std::string& project, const QuotaUsage& usage, bool with_usage) {
  json j = {{"id", project}};
  for (const auto& [resource, line] : usage) {
    if (with_usage)
      j[resource] = {{"limit", line.limit}, {"in_use", line.in_use}, {"reserved", line.reserved}, {"allocated", 0}};
    else
      j[resource] = line.limit;
  }
  return j;
}

json pool_view(const PoolReport& report, bool detail) {
  const PoolState& s = report.state;
  json j = {{"name", backend_host(s.name) + "#" + s.name}};
  if (!detail) return j;
  json caps = {{"pool_name", s.name},
               {"volume_backend_name", s.name},
               {"storage_protocol", report.driver},
               {"total_capacity_gb", s.total_gb},
               {"free_capacity_gb", s.free_gb},
               {"allocated_capacity_gb", s.allocated_gb},
               {"provisioned_capacity_gb", s.allocated_gb},
               {"max_over_subscription_ratio", s.max_over_subscription_ratio},
               {"reserved_percentage", s.reserved_percentage},
               {"availability_zone", s.availability_zone}};
  for (const auto& [key, value] : s.capabilities) caps[key] = value;
  j["capabilities"] = caps;
  return j;
}

uint64_t size_field(const json& j, const char* key, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) bad_request(std::string("'") + key + "' is required.");
    return 0;
  }
  const json& v = j[key];
  // Cinder accepts sizes as integers or integer strings ("10").
  int64_t n = -1;
  if (v.is_number_integer()) {
    n = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string text = v.get<std::string>();
    if (!text.empty() && text.size() < 10 && text.find_first_not_of("0123456789") == std::string::npos)
      n = std::stoll(text);
  }
  if (n < 1 || static_cast<uint64_t>(n) > kMaxSizeGb)
    bad_request(std::string("Invalid input received: '") + key + "' must be a whole number of GiB between 1 and " +
                std::to_string(kMaxSizeGb) + ", not " + to_text(v).substr(0, 64) + ".");
  return static_cast<uint64_t>(n);
}

// Cinder's schema (3.53) wants these ids to be UUIDs when given.
void check_uuid_field(const json& j, const char* key) {
  const std::string text = opt_string(j, key);
  if (text.empty()) return;
  bool valid = text.size() == 36;
  for (size_t i = 0; valid && i < text.size(); ++i)
    valid = (i == 8 || i == 13 || i == 18 || i == 23) ? text[i] == '-' : std::isxdigit(static_cast<unsigned char>(text[i])) != 0;
  if (!valid) bad_request(std::string("'") + key + "' must be a UUID, not '" + text.substr(0, 64) + "'.");
}

// A name or description from the field or its older "display_" alias (the field wins).
std::optional<std::string> name_field(const json& j, const char* field, const char* alias) {
  auto value = changed_string(j, field);
  if (!value) value = changed_string(j, alias);
  if (value) check_length(*value, field);
  return value;
}

json type_view(const VolumeType& t) {
  json specs(t.extra_specs);
  return json{{"id", t.name}, {"name", t.name}, {"description", t.description}, {"is_public", true},
              {"os-volume-type-access:is_public", true},
              {"extra_specs", specs.is_null() ? json::object() : specs}, {"volgate:encrypted", t.encrypted}};
}

// The project's volumes filtered, sorted and paged as the query asks (see list_query.hpp).
ListPage<Volume> query_volumes(VolumeService& service, const ApiRequest& q) {
  static const std::set<std::string> filters = {"name", "status", "availability_zone", "volume_type", "bootable",
                                                "metadata"};
  static const std::set<std::string> sort_keys = {"id", "name", "size", "status", "availability_zone",
                                                  "volume_type", "created_at", "updated_at"};
  ListQuery query = parse_list_query(q, filters, sort_keys);
  std::optional<Metadata> wanted_metadata;
  if (query.filters.count("metadata")) {
    // cinderclient writes the filter as a Python dict, {'k': 'v'}; JSON is taken too.
    std::string text = query.filters["metadata"];
    for (char& c : text)
      if (c == '\'') c = '"';
    json parsed;
    try {
      parsed = parse_untrusted_json(text);
    } catch (const UntrustedJsonError&) {
      bad_request("Invalid metadata filter: expected {'key': 'value', ...}.");
    }
    wanted_metadata = metadata_from_json(parsed, "metadata filter");
  }
  auto field = [](const Volume& v, const std::string& key) -> json {
    if (key == "id") return v.id;
    if (key == "name") return v.name;
    if (key == "size") return v.size_gb;
    if (key == "status") return to_string(v.status);
    if (key == "availability_zone") return v.availability_zone;
    if (key == "volume_type") return v.volume_type;
    if (key == "bootable") return "false";
    if (key == "created_at") return v.created_at;
    return v.updated_at;
  };
  auto matches = [&](const Volume& v, const std::string& key, const std::string& wanted) -> std::optional<bool> {
    if (key == "bootable") return wanted == "false" || wanted == "False" || wanted == "0";
    if (key != "metadata") return std::nullopt;
    for (const auto& [k, value] : *wanted_metadata)
      if (!v.metadata.count(k) || v.metadata.at(k) != value) return false;
    return true;
  };
  return apply_list_query<Volume>(query, service.list_volumes(listed_project(q)), field,
                                  [](const Volume& v) { return v.id; }, matches);
}

ListPage<Snapshot> query_snapshots(VolumeService& service, const ApiRequest& q) {
  static const std::set<std::string> filters = {"name", "status", "volume_id"};
  static const std::set<std::string> sort_keys = {"id", "name", "size", "status", "volume_id", "created_at",
                                                  "updated_at"};
  auto field = [](const Snapshot& s, const std::string& key) -> json {
    if (key == "id") return s.id;
    if (key == "name") return s.name;
    if (key == "size") return s.size_gb;
    if (key == "status") return to_string(s.status);
    if (key == "volume_id") return s.volume_id;
    if (key == "created_at") return s.created_at;
    return s.updated_at;
  };
  return apply_list_query<Snapshot>(parse_list_query(q, filters, sort_keys), service.list_snapshots(listed_project(q)),
                                    field, [](const Snapshot& s) { return s.id; });
}

}  // namespace

ApiResponse error_response(int status, std::string_view fault, const std::string& message) {
  json j;
  j[std::string(fault)] = {{"message", message}, {"code", status}};
  return {status, to_text(j)};
}

namespace {
std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }
}  // namespace

// The versions documents, which clients read before they authenticate.
bool VolumeApi::open_to_anyone(std::string_view method, std::string_view target) {
  const std::string_view path = path_of(target);
  return method == "GET" && (path == "/" || path == "/v3" || path == "/v3/" || path == "/v2.1" || path == "/v2.1/");
}

ApiResponse VolumeApi::handle(const std::string& method, const std::string& target, const std::string& body,
                              const RequestHeaders& request_headers) {
  // Every answer names the request (x-openstack-request-id), as the action log does.
  RequestHeaders headers = request_headers;
  headers.request_id = new_request_id();
  // The documents at "/", "/v3" and "/v2.1" list versions and have none themselves; requests
  // under /v3 answer in the volume microversion they name, those under /v2.1 in the compute one.
  const std::string_view path = path_of(target);
  const bool documents = path == "/" || path == "/v3" || path == "/v3/" || path == "/v2.1" || path == "/v2.1/";
  const bool compute = path.starts_with("/v2.1/");
  std::optional<ApiVersion> version;
  ApiResponse r;
  std::string route = "unmatched";
  try {
    authorize_request(headers.caller, method, target);
    if (!documents)
      version = compute ? negotiate_compute_version(headers.api_version, headers.nova_api_version)
                        : negotiate_api_version(headers.api_version);
    if (compute) check_server_owner(path, headers.caller);
    r = router_.dispatch(method, admin_target(target, headers.caller), body, version.value_or(kMinApiVersion), headers,
                         &route);
  } catch (const ApiError& e) {
    r = error_response(e.http_status(), e.fault_name(), e.what());
  } catch (const IllegalTransition& e) {
    r = error_response(409, "conflictingRequest", e.what());
  } catch (const DomainNotFound& e) {
    // The server went (undefined) while a flow worked on it: what Nova answers for a server
    // that is not there. The flow has undone its part already.
    spdlog::warn("{} {} ({}): {}", method, target, headers.request_id, e.what());
    r = error_response(404, "itemNotFound", "The instance could not be found: " + without_paths(e.what()));
  } catch (const std::exception& e) {
    spdlog::error("{} {} ({}): {}", method, target, headers.request_id, e.what());  // the whole story in the log
    r = error_response(500, "computeFault", "The server has either erred or is incapable of performing the "
                                            "requested operation: " + without_paths(e.what()));
  }
  ControllerMetrics::process().api_request(method, route, r.status);
  r.headers.emplace_back("x-openstack-request-id", headers.request_id);
  if (compute) r.headers.emplace_back("x-compute-request-id", headers.request_id);
  if (version && compute) {
    r.headers.emplace_back("OpenStack-API-Version", "compute " + version->text());
    r.headers.emplace_back("X-OpenStack-Nova-API-Version", version->text());
    r.headers.emplace_back("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version");
  } else if (version) {
    r.headers.emplace_back("OpenStack-API-Version", "volume " + version->text());
    r.headers.emplace_back("Vary", "OpenStack-API-Version");
  }
  return r;
}

// A member reaches only its project's servers: a path that names another's (or one no project
// owns) is answered as if there were no such server.
void VolumeApi::check_server_owner(std::string_view path, const Caller& caller) {
  if (caller.admin() || !hypervisor_) return;
  const auto id = server_in_path(path);
  if (!id) return;
  auto server = hypervisor_->with_driver([&](VirtDriver& d) { return d.find_server(*id); });
  if (server && !may_see_server(caller, server->project)) not_found("Instance " + *id + " could not be found.");
}

// An admin reaches any project's volume, snapshot or attachment through any project's URL, as in
// Cinder (where an admin's lookups are not scoped): the request then acts in the object's own
// project, whose quotas and attachments it concerns.
std::string VolumeApi::admin_target(const std::string& target, const Caller& caller) {
  if (!caller.admin()) return target;
  const auto object = object_in_path(target);
  if (!object) return target;
  const auto owner = service_.owner_of(object->kind, object->id);
  if (!owner || *owner == object->project) return target;
  return target.substr(0, object->project_at) + *owner + target.substr(object->project_at + object->project.size());
}

VolumeApi::VolumeApi(VolumeService& service, Hypervisor* hypervisor, ComputeService* compute)
    : service_(service), hypervisor_(hypervisor) {
  Router& r = router_;
  auto base_url = [](const ApiRequest& q) { return q.headers.host.empty() ? "" : "http://" + q.headers.host; };
  // "/" offers a choice of versions (300, as Cinder); /v3 describes the one it is.
  r.add("GET", "/", [base_url](const ApiRequest& q) {
    return ok(300, {{"versions", json::array({version_entry(base_url(q))})}});
  });
  r.add("GET", "/v3", [base_url](const ApiRequest& q) {
    return ok(200, {{"versions", json::array({version_entry(base_url(q))})}});
  });
  // Nova's: novaclient reads the one at its endpoint ("/v2.1") to learn the compute range.
  if (hypervisor)
    r.add("GET", "/v2.1", [base_url](const ApiRequest& q) {
      return ok(200, {{"version", compute_version_entry(base_url(q))}});
    });

  auto list_volumes = [this](const ApiRequest& q) {
    ListPage<Volume> page = query_volumes(service_, q);
    json list = json::array();
    for (const auto& v : page.items) list.push_back(volume_view(service_, v, q.version));
    json answer = {{"volumes", list}};
    if (q.version.since(45) && q.query_flag("with_count")) answer["count"] = page.total;
    return ok(200, answer);
  };
  r.add("GET", "/v3/{project}/volumes", list_volumes);
  r.add("GET", "/v3/{project}/volumes/detail", list_volumes);
  r.add("GET", "/v3/{project}/volumes/summary", [this](const ApiRequest& q) {
    if (!q.version.since(12)) not_found("The volumes summary needs microversion 3.12 or later.");
    for (const auto& [key, value] : q.query_items())
      if (key != "all_tenants") bad_request("Invalid filters " + key.substr(0, 64) + " are found in query options.");
    uint64_t total_size = 0;
    std::map<std::string, std::set<std::string>> metadata;  // key -> the values volumes give it
    const auto volumes = service_.list_volumes(listed_project(q));
    for (const auto& v : volumes) {
      total_size += v.size_gb;
      for (const auto& [key, value] : v.metadata) metadata[key].insert(value);
    }
    json summary = {{"total_size", total_size}, {"total_count", volumes.size()}};
    if (q.version.since(36)) summary["metadata"] = metadata;
    return ok(200, {{"volume-summary", summary}});
  });
  r.add("POST", "/v3/{project}/volumes", [this](const ApiRequest& q) { return create_volume(q); });
  r.add("GET", "/v3/{project}/volumes/{id}", [this](const ApiRequest& q) {
    return ok(200, {{"volume", volume_view(service_, service_.get_volume(project_of(q), q.param("id")), q.version)}});
  });
  r.add("PUT", "/v3/{project}/volumes/{id}", [this](const ApiRequest& q) {
    json v = parse_body(q.body, "volume", {"name", "description", "display_name", "display_description", "metadata"});
    if (v.empty() && q.version.since(53))
      bad_request("Give at least one of name, description or metadata to change.");
    ResourceChanges changes;
    changes.name = name_field(v, "name", "display_name");
    changes.description = name_field(v, "description", "display_description");
    if (v.contains("metadata")) changes.metadata = metadata_from_json(v["metadata"]);
    const std::string& project = project_of(q);
    return ok(200, {{"volume", volume_view(service_, service_.update_volume(project, q.param("id"), changes), q.version)}});
  });
  r.add("DELETE", "/v3/{project}/volumes/{id}", [this](const ApiRequest& q) {
    // cascade (delete the snapshots too) is Cinder's; volgate does not offer it, and says so
    // rather than deleting less than asked. force (3.23 on) is the admin's os-force_delete.
    if (q.query_flag("cascade")) bad_request("volgate does not delete snapshots with their volume (cascade); delete them first.");
    const bool force = q.query_flag("force");
    if (force) require_admin(q.headers.caller, "force-delete a volume");
    service_.delete_volume(project_of(q), q.param("id"), force);
    return ApiResponse{202, ""};
  });
  r.add("POST", "/v3/{project}/volumes/{id}/action", [this](const ApiRequest& q) { return volume_action(q); });
  add_volume_metadata_routes(r, service_);
  add_attachment_routes(r, service_);
  add_backup_routes(r, service_);
  if (hypervisor) add_server_routes(r, *hypervisor, compute);
  if (compute) {
    add_volume_attachment_routes(r, *compute);
    add_instance_action_routes(r, *compute);
    add_server_action_routes(r, *compute);
  }

  auto list_snapshots = [this](const ApiRequest& q) {
    ListPage<Snapshot> page = query_snapshots(service_, q);
    json list = json::array();
    for (const auto& s : page.items) list.push_back(snapshot_view(s, q.version));
    json answer = {{"snapshots", list}};
    if (q.version.since(45) && q.query_flag("with_count")) answer["count"] = page.total;
    return ok(200, answer);
  };
  r.add("GET", "/v3/{project}/snapshots", list_snapshots);
  r.add("GET", "/v3/{project}/snapshots/detail", list_snapshots);
  r.add("POST", "/v3/{project}/snapshots", [this](const ApiRequest& q) { return create_snapshot(q); });
  r.add("GET", "/v3/{project}/snapshots/{id}", [this](const ApiRequest& q) {
    return ok(200, {{"snapshot", snapshot_view(service_.get_snapshot(project_of(q), q.param("id")), q.version)}});
  });
  r.add("PUT", "/v3/{project}/snapshots/{id}", [this](const ApiRequest& q) {
    json s = parse_body(q.body, "snapshot", {"name", "description", "display_name", "display_description"});
    if (s.empty() && q.version.since(53)) bad_request("Give at least one of name or description to change.");
    ResourceChanges changes;
    changes.name = name_field(s, "name", "display_name");
    changes.description = name_field(s, "description", "display_description");
    const std::string& project = project_of(q);
    return ok(200, {{"snapshot", snapshot_view(service_.update_snapshot(project, q.param("id"), changes), q.version)}});
  });
  add_snapshot_action_routes(r, service_);
  r.add("DELETE", "/v3/{project}/snapshots/{id}", [this](const ApiRequest& q) {
    service_.delete_snapshot(project_of(q), q.param("id"));
    return ApiResponse{202, ""};
  });

  r.add("GET", "/v3/{project}/os-quota-sets/{target}", [this](const ApiRequest& q) {
    project_of(q);
    const std::string& target = project_of(q, "target");
    return ok(200, {{"quota_set", quota_view(target, service_.quota_usage(target), q.query_flag("usage"))}});
  });
  r.add("GET", "/v3/{project}/os-quota-sets/{target}/defaults", [this](const ApiRequest& q) {
    project_of(q);
    const std::string& target = project_of(q, "target");
    json j = {{"id", target}};
    for (const auto& [resource, limit] : service_.default_quotas()) j[resource] = limit;
    return ok(200, {{"quota_set", j}});
  });
  r.add("PUT", "/v3/{project}/os-quota-sets/{target}", [this](const ApiRequest& q) {
    project_of(q);
    const std::string& target = project_of(q, "target");
    // tenant_id and id name the project again (cinderclient sends tenant_id); Cinder ignores them.
    json j = parse_body(q.body, "quota_set", {kQuotaVolumes, kQuotaSnapshots, kQuotaGigabytes, kQuotaBackups,
                                              kQuotaBackupGigabytes, "tenant_id", "id"});
    j.erase("tenant_id");
    j.erase("id");
    // ?skip_validation=false: refuse a limit below what is already used or reserved.
    const auto skip = q.query_value("skip_validation");
    const bool validate = skip && (*skip == "false" || *skip == "False" || *skip == "0");
    const QuotaUsage usage = service_.quota_usage(target);
    for (const auto& [resource, value] : j.items()) {
      if (!value.is_number_integer()) bad_request("Quota limit for " + resource + " must be an integer.");
      // Cinder's bound (its database column); above 2^63 the value would read back as -1.
      constexpr int64_t kMaxLimit = 2147483647;
      if (value.is_number_unsigned() ? value.get<uint64_t>() > static_cast<uint64_t>(kMaxLimit)
                                     : value.get<int64_t>() > kMaxLimit)
        bad_request("Quota limit for " + resource + " must be at most " + std::to_string(kMaxLimit) + ".");
      const int64_t limit = value.get<int64_t>();
      if (limit < -1) bad_request("Quota limit for " + resource + " must be -1 (unlimited) or more.");
      if (validate && limit >= 0 && usage.count(resource) &&
          limit < usage.at(resource).in_use + usage.at(resource).reserved)
        bad_request("Quota limit " + std::to_string(limit) + " for " + resource + " is below what project " +
                    target + " already uses (" + std::to_string(usage.at(resource).in_use) + ").");
    }
    for (const auto& [resource, value] : j.items()) service_.set_quota_limit(target, resource, value.get<int64_t>());
    return ok(200, {{"quota_set", quota_view(target, service_.quota_usage(target), false)}});
  });

  r.add("GET", "/v3/{project}/scheduler-stats/get_pools", [this](const ApiRequest& q) {
    project_of(q);
    json list = json::array();
    for (const auto& p : service_.pools()) list.push_back(pool_view(p, q.query_flag("detail")));
    return ok(200, {{"pools", list}});
  });

  r.add("GET", "/v3/{project}/types", [this](const ApiRequest& q) {
    project_of(q);
    json list = json::array();
    for (const auto& [name, t] : service_.volume_types()) list.push_back(type_view(t));
    return ok(200, {{"volume_types", list}});
  });
  // "default" is the default type, whatever its name (cinderclient's type-default).
  auto find_type = [this](const ApiRequest& q) -> const VolumeType& {
    project_of(q);
    const std::string name = q.param("name") == "default" ? service_.default_volume_type() : q.param("name");
    auto it = service_.volume_types().find(name);
    if (it == service_.volume_types().end()) not_found("Volume type " + q.param("name") + " could not be found.");
    return it->second;
  };
  r.add("GET", "/v3/{project}/types/{name}", [find_type](const ApiRequest& q) {
    return ok(200, {{"volume_type", type_view(find_type(q))}});
  });
  r.add("GET", "/v3/{project}/types/{name}/extra_specs", [find_type](const ApiRequest& q) {
    return ok(200, {{"extra_specs", json(find_type(q).extra_specs)}});
  });

  add_system_routes(r, service_);
  r.set_unmatched(answer_unmatched);
}

ApiResponse VolumeApi::create_volume(const ApiRequest& q) {
  // Every field of Cinder's schema at 3.53 is accepted; null means absent. Those volgate cannot
  // honour are refused by name when they ask for something.
  json v = parse_body(q.body, "volume",
                      {"size", "name", "description", "display_name", "display_description", "volume_type",
                       "availability_zone", "snapshot_id", "source_volid", "imageRef", "image_id", "metadata",
                       "consistencygroup_id", "group_id", "backup_id", "multiattach",
                       "encrypted"},  // the last is volgate's own
                      {"OS-SCH-HNT:scheduler_hints"});
  // The scheduler hints sit beside "volume", not in it.
  json whole = parse_json(q.body);
  if (whole.contains("OS-SCH-HNT:scheduler_hints")) {
    const json& hints = whole["OS-SCH-HNT:scheduler_hints"];
    if (!hints.is_null() && !hints.is_object()) bad_request("'OS-SCH-HNT:scheduler_hints' must be an object.");
    if (hints.is_object() && !hints.empty())
      bad_request("volgate's scheduler takes no hints (OS-SCH-HNT:scheduler_hints); use a volume type or an "
                  "availability zone to place a volume.");
  }
  if (q.version.since(53))
    for (const char* key : {"snapshot_id", "source_volid", "consistencygroup_id", "backup_id"}) check_uuid_field(v, key);
  if (!opt_string(v, "consistencygroup_id").empty())
    bad_request("volgate does not offer consistency groups; leave 'consistencygroup_id' out.");
  if (!opt_string(v, "group_id").empty()) bad_request("volgate does not offer volume groups; leave 'group_id' out.");
  // A volume from a backup (Cinder 3.47): a restore into a new volume of the requested size.
  const std::string backup_id = opt_string(v, "backup_id");
  if (!backup_id.empty() && !q.version.since(47))
    bad_request("Creating a volume from a backup ('backup_id') needs microversion 3.47 or later.");
  if (opt_boolean(v, "multiattach").value_or(false))
    bad_request("A volume is multiattach through its volume type, and no volgate volume type allows it.");

  CreateVolumeRequest r;
  r.project = project_of(q);
  r.snapshot_id = opt_string(v, "snapshot_id");
  r.source_volid = opt_string(v, "source_volid");
  r.image = opt_string(v, "imageRef");
  const std::string image_id = opt_string(v, "image_id");
  if (!image_id.empty() && !r.image.empty() && image_id != r.image)
    bad_request("'imageRef' and 'image_id' name different images.");
  if (r.image.empty()) r.image = image_id;
  r.backup_id = backup_id;
  r.size_gb = size_field(v, "size", r.snapshot_id.empty() && r.source_volid.empty() && r.image.empty() && backup_id.empty());
  r.name = name_field(v, "name", "display_name").value_or("");
  r.description = name_field(v, "description", "display_description").value_or("");
  r.volume_type = opt_string(v, "volume_type");
  r.availability_zone = opt_string(v, "availability_zone");
  check_length(r.volume_type, "volume_type");
  check_length(r.availability_zone, "availability_zone");
  check_length(r.image, "imageRef");
  if (v.contains("metadata")) r.metadata = metadata_from_json(v["metadata"]);
  if (auto encrypted = v.contains("encrypted") ? std::optional<json>(v["encrypted"]) : std::nullopt) {
    if (!encrypted->is_boolean()) bad_request("'encrypted' must be true or false.");
    r.encrypted = encrypted->get<bool>();
  }
  Volume created = service_.create_volume(r);
  return ok(202, {{"volume", volume_view(service_, created, q.version)}});
}

ApiResponse VolumeApi::volume_action(const ApiRequest& q) {
  const std::string& project = project_of(q);
  json j = parse_json(q.body);
  if (!j.is_object() || j.size() != 1)
    bad_request("An action body is an object with exactly one action, e.g. {\"os-extend\": {\"new_size\": 2}}.");
  const std::string action = j.begin().key();
  if (admin_only_volume_action(action)) require_admin(q.headers.caller, "do " + action);
  if (action == "os-extend") {
    json e = parse_body(q.body, "os-extend", {"new_size"});
    service_.extend_volume(project, q.param("id"), size_field(e, "new_size", true));
    return {202, ""};
  }
  if (action == "os-volume_upload_image") return upload_to_image(q);
  // The actions Nova uses around attach and detach: status changes whose bodies carry nothing
  // volgate needs.
  using StatusAction = void (VolumeService::*)(const std::string&, const std::string&);
  static const std::map<std::string, StatusAction> status_actions = {
      {"os-reserve", &VolumeService::reserve_volume},
      {"os-unreserve", &VolumeService::unreserve_volume},
      {"os-begin_detaching", &VolumeService::begin_detaching},
      {"os-roll_detaching", &VolumeService::roll_detaching},
  };
  const std::string& id = q.param("id");
  if (auto answer = admin_volume_action(service_, q, action, j.begin().value())) return *answer;
  if (auto it = status_actions.find(action); it != status_actions.end()) {
    (service_.*(it->second))(project, id);
    return {202, ""};
  }
  if (action == "os-force_detach") {
    const json& f = j["os-force_detach"];
    if (!f.is_null() && !f.is_object()) bad_request("'os-force_detach' takes an object: {\"attachment_id\": ...}.");
    std::string attachment_id;
    if (f.is_object()) {
      check_fields(f, "os-force_detach", {"attachment_id", "connector"});
      attachment_id = opt_string(f, "attachment_id");
    }
    service_.force_detach(project, id, attachment_id);
    return {202, ""};
  }
  bad_request("Unknown or unsupported volume action '" + action + "'.");
}

// os-volume_upload_image, in Cinder's shape (the fields `cinder upload-to-image` sends), into the
// controller's image upload directory instead of Glance. The answer is Cinder's: the volume as it
// is now (uploading) and the image to be.
ApiResponse VolumeApi::upload_to_image(const ApiRequest& q) {
  json u = parse_body(q.body, "os-volume_upload_image",
                      {"image_name", "force", "disk_format", "container_format", "visibility", "protected"});
  UploadImageRequest r;
  r.project = project_of(q);
  r.volume_id = q.param("id");
  r.image_name = opt_string(u, "image_name");
  if (r.image_name.empty()) bad_request("'image_name' is required.");
  check_length(r.image_name, "image_name");
  r.force = opt_boolean(u, "force").value_or(false);
  if (auto f = opt_string(u, "disk_format"); !f.empty()) r.disk_format = f;
  if (r.disk_format != "raw" && r.disk_format != "qcow2")
    bad_request("disk_format '" + r.disk_format + "' is not offered; volgate writes raw or qcow2 images.");
  if (auto f = opt_string(u, "container_format"); !f.empty()) r.container_format = f;
  if (r.container_format != "bare")
    bad_request("container_format '" + r.container_format + "' is not offered; volgate writes bare images.");
  if (auto v = opt_string(u, "visibility"); !v.empty()) r.visibility = v;
  static const std::set<std::string> visibilities = {"public", "private", "community", "shared"};
  if (!visibilities.count(r.visibility))
    bad_request("visibility must be public, private, community or shared, not '" + r.visibility + "'.");
  // As Glance's default policy: only an admin publishes an image to every project.
  if (r.visibility == "public") require_admin(q.headers.caller, "upload a public image");
  r.is_protected = opt_boolean(u, "protected").value_or(false);
  const std::string image_id = service_.upload_volume_to_image(r);
  const Volume v = service_.get_volume(r.project, r.volume_id);
  json type = nullptr;
  if (auto t = service_.volume_types().find(v.volume_type); t != service_.volume_types().end()) type = type_view(t->second);
  return ok(202, {{"os-volume_upload_image",
                   {{"id", v.id},
                    {"updated_at", v.updated_at},
                    // As Cinder answers: the upload may already be over when the volume is read.
                    {"status", "uploading"},
                    {"display_description", v.description},
                    {"size", v.size_gb},
                    {"volume_type", type},
                    {"image_id", image_id},
                    {"container_format", r.container_format},
                    {"disk_format", r.disk_format},
                    {"image_name", r.image_name},
                    {"protected", r.is_protected},
                    {"visibility", r.visibility}}}});
}

ApiResponse VolumeApi::create_snapshot(const ApiRequest& q) {
  json s = parse_body(q.body, "snapshot",
                      {"volume_id", "name", "description", "display_name", "display_description", "force", "metadata"});
  const std::string volume_id = opt_string(s, "volume_id");
  if (volume_id.empty()) bad_request("'volume_id' is required.");
  const bool force = opt_boolean(s, "force").value_or(false);
  if (s.contains("metadata") && !metadata_from_json(s["metadata"]).empty())
    bad_request("Snapshot metadata is not supported by volgate yet; leave 'metadata' empty.");
  const std::string name = name_field(s, "name", "display_name").value_or("");
  const std::string description = name_field(s, "description", "display_description").value_or("");
  Snapshot created = service_.create_snapshot(project_of(q), volume_id, name, description, force);
  return ok(202, {{"snapshot", snapshot_view(created, q.version)}});
}

}  // namespace volgate::controller
