#include "controller/api/volume_api.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "common/untrusted_json.hpp"
#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// Sizes beyond this are typing mistakes, not volumes (1 PiB).
constexpr uint64_t kMaxSizeGb = 1024 * 1024;

// Paths, methods and ids are echoed in messages, and a client may send any bytes in them.
// nlohmann::json refuses to write a string that is not UTF-8 (it throws); such bytes go out
// as U+FFFD instead.
std::string to_text(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

json null_if_empty(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

json volume_view(VolumeService& service, const Volume& v) {
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
            {"multiattach", false},
            {"attachments", json::array()},
            {"metadata", json::object()},
            {"created_at", v.created_at},
            {"updated_at", v.updated_at},
            {"os-vol-tenant-attr:tenant_id", v.project},
            {"os-vol-host-attr:host", v.pool.empty() ? json(nullptr) : json("volgate@" + v.pool + "#" + v.pool)}};
  // volgate's own attributes, prefixed so that they never clash with Cinder's.
  if (!v.image.empty()) j["volgate:image"] = v.image;
  if (!v.error_message.empty()) j["volgate:error"] = without_paths(v.error_message);
  std::string target = service.export_target(v);
  if (!target.empty() && v.status != VolumeStatus::creating) j["volgate:export_target"] = target;
  if (v.status == VolumeStatus::creating)
    if (auto p = service.progress(v.id)) j["volgate:progress"] = static_cast<int>(*p);
  return j;
}

json snapshot_view(const Snapshot& s) {
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
  json j = {{"name", "volgate@" + s.name + "#" + s.name}};
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

// Parses the body as {"<root>": {...}} and returns the inner object; refuses other top-level
// keys and any inner key not in `allowed`.
json parse_json(const std::string& body) {
  try {
    return parse_untrusted_json(body);
  } catch (const UntrustedJsonError& e) {
    bad_request(e.what());
  }
}

json parse_body(const std::string& body, const char* root, std::initializer_list<const char*> allowed) {
  json j = parse_json(body);
  if (!j.is_object() || !j.contains(root) || !j[root].is_object())
    bad_request(std::string("The request body must be an object with a \"") + root + "\" object.");
  for (const auto& [key, value] : j.items())
    if (key != root) bad_request("Unknown field '" + key + "' in the request body.");
  json inner = std::move(j[root]);  // moved, not copied
  for (const auto& [key, value] : inner.items()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) bad_request(std::string("Unknown field '") + key + "' in " + root + ".");
  }
  return inner;
}

std::string opt_string(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) bad_request(std::string("'") + key + "' must be a string.");
  return j[key].get<std::string>();
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

bool valid_segment(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

ApiResponse ok(int status, const json& body) { return {status, to_text(body)}; }


json type_view(const VolumeType& t) {
  json specs(t.extra_specs);
  return json{{"id", t.name}, {"name", t.name}, {"description", t.description}, {"is_public", true},
              {"extra_specs", specs.is_null() ? json::object() : specs}, {"volgate:encrypted", t.encrypted}};
}

}  // namespace

ApiResponse error_response(int status, std::string_view fault, const std::string& message) {
  json j;
  j[std::string(fault)] = {{"message", message}, {"code", status}};
  return {status, to_text(j)};
}

ApiResponse VolumeApi::handle(const std::string& method, const std::string& target, const std::string& body) {
  try {
    return router_.dispatch(method, target, body);
  } catch (const ApiError& e) {
    return error_response(e.http_status(), e.fault_name(), e.what());
  } catch (const IllegalTransition& e) {
    return error_response(409, "conflictingRequest", e.what());
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", method, target, e.what());  // the whole story stays in the log
    return error_response(500, "computeFault", "The server has either erred or is incapable of performing the "
                                               "requested operation: " + without_paths(e.what()));
  }
}

// The project in the path, checked: ids and names end up in logs and in the database.
static const std::string& project_of(const ApiRequest& r, const char* param = "project") {
  const std::string& project = r.param(param);
  if (!valid_segment(project)) bad_request("Project '" + project + "' must be 1-64 letters, digits, '-' or '_'.");
  return project;
}

VolumeApi::VolumeApi(VolumeService& service) : service_(service) {
  Router& r = router_;
  auto versions = [](const ApiRequest&) {
    return ok(200, {{"versions", {{{"id", "v3.0"}, {"status", "CURRENT"}, {"min_version", "3.0"}}}}});
  };
  r.add("GET", "/", versions);
  r.add("GET", "/v3", versions);

  auto list_volumes = [this](const ApiRequest& q) {
    json list = json::array();
    for (const auto& v : service_.list_volumes(project_of(q))) list.push_back(volume_view(service_, v));
    return ok(200, {{"volumes", list}});
  };
  r.add("GET", "/v3/{project}/volumes", list_volumes);
  r.add("GET", "/v3/{project}/volumes/detail", list_volumes);
  r.add("POST", "/v3/{project}/volumes", [this](const ApiRequest& q) { return create_volume(q); });
  r.add("GET", "/v3/{project}/volumes/{id}", [this](const ApiRequest& q) {
    return ok(200, {{"volume", volume_view(service_, service_.get_volume(project_of(q), q.param("id")))}});
  });
  r.add("DELETE", "/v3/{project}/volumes/{id}", [this](const ApiRequest& q) {
    service_.delete_volume(project_of(q), q.param("id"));
    return ApiResponse{202, ""};
  });
  r.add("POST", "/v3/{project}/volumes/{id}/action", [this](const ApiRequest& q) { return volume_action(q); });

  auto list_snapshots = [this](const ApiRequest& q) {
    json list = json::array();
    for (const auto& s : service_.list_snapshots(project_of(q))) list.push_back(snapshot_view(s));
    return ok(200, {{"snapshots", list}});
  };
  r.add("GET", "/v3/{project}/snapshots", list_snapshots);
  r.add("GET", "/v3/{project}/snapshots/detail", list_snapshots);
  r.add("POST", "/v3/{project}/snapshots", [this](const ApiRequest& q) { return create_snapshot(q); });
  r.add("GET", "/v3/{project}/snapshots/{id}", [this](const ApiRequest& q) {
    return ok(200, {{"snapshot", snapshot_view(service_.get_snapshot(project_of(q), q.param("id")))}});
  });
  r.add("DELETE", "/v3/{project}/snapshots/{id}", [this](const ApiRequest& q) {
    service_.delete_snapshot(project_of(q), q.param("id"));
    return ApiResponse{202, ""};
  });

  r.add("GET", "/v3/{project}/os-quota-sets/{target}", [this](const ApiRequest& q) {
    project_of(q);
    const std::string& target = project_of(q, "target");
    return ok(200, {{"quota_set", quota_view(target, service_.quota_usage(target), q.query_flag("usage"))}});
  });
  r.add("PUT", "/v3/{project}/os-quota-sets/{target}", [this](const ApiRequest& q) {
    project_of(q);
    const std::string& target = project_of(q, "target");
    json j = parse_body(q.body, "quota_set", {kQuotaVolumes, kQuotaSnapshots, kQuotaGigabytes});
    for (const auto& [resource, value] : j.items()) {
      if (!value.is_number_integer()) bad_request("Quota limit for " + resource + " must be an integer.");
      service_.set_quota_limit(target, resource, value.get<int64_t>());
    }
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
  r.add("GET", "/v3/{project}/types/{name}", [this](const ApiRequest& q) {
    project_of(q);
    auto it = service_.volume_types().find(q.param("name"));
    if (it == service_.volume_types().end()) not_found("Volume type " + q.param("name") + " could not be found.");
    return ok(200, {{"volume_type", type_view(it->second)}});
  });
}

ApiResponse VolumeApi::create_volume(const ApiRequest& q) {
  json v = parse_body(q.body, "volume",
                      {"size", "name", "description", "volume_type", "availability_zone", "snapshot_id",
                       "source_volid", "imageRef", "encrypted", "metadata"});
  if (v.contains("metadata") && !(v["metadata"].is_object() && v["metadata"].empty()))
    bad_request("Volume metadata is not supported by volgate yet; leave 'metadata' empty.");
  CreateVolumeRequest r;
  r.project = project_of(q);
  r.snapshot_id = opt_string(v, "snapshot_id");
  r.source_volid = opt_string(v, "source_volid");
  r.image = opt_string(v, "imageRef");
  r.size_gb = size_field(v, "size", r.snapshot_id.empty() && r.source_volid.empty() && r.image.empty());
  r.name = opt_string(v, "name");
  r.description = opt_string(v, "description");
  r.volume_type = opt_string(v, "volume_type");
  r.availability_zone = opt_string(v, "availability_zone");
  if (r.name.size() > 255) bad_request("Volume name is longer than 255 characters.");
  if (v.contains("encrypted")) {
    if (!v["encrypted"].is_boolean()) bad_request("'encrypted' must be true or false.");
    r.encrypted = v["encrypted"].get<bool>();
  }
  Volume created = service_.create_volume(r);
  return ok(202, {{"volume", volume_view(service_, created)}});
}

ApiResponse VolumeApi::volume_action(const ApiRequest& q) {
  const std::string& project = project_of(q);
  json j = parse_json(q.body);
  if (!j.is_object() || j.size() != 1)
    bad_request("An action body is an object with exactly one action, e.g. {\"os-extend\": {\"new_size\": 2}}.");
  const std::string action = j.begin().key();
  if (action == "os-extend") {
    json e = parse_body(q.body, "os-extend", {"new_size"});
    service_.extend_volume(project, q.param("id"), size_field(e, "new_size", true));
    return {202, ""};
  }
  bad_request("Unknown or unsupported volume action '" + action + "'.");
}

ApiResponse VolumeApi::create_snapshot(const ApiRequest& q) {
  json s = parse_body(q.body, "snapshot", {"volume_id", "name", "description", "force", "metadata"});
  const std::string volume_id = opt_string(s, "volume_id");
  if (volume_id.empty()) bad_request("'volume_id' is required.");
  bool force = false;
  if (s.contains("force")) {
    if (!s["force"].is_boolean()) bad_request("'force' must be true or false.");
    force = s["force"].get<bool>();
  }
  if (s.contains("metadata") && !(s["metadata"].is_object() && s["metadata"].empty()))
    bad_request("Snapshot metadata is not supported by volgate yet; leave 'metadata' empty.");
  Snapshot created =
      service_.create_snapshot(project_of(q), volume_id, opt_string(s, "name"), opt_string(s, "description"), force);
  return ok(202, {{"snapshot", snapshot_view(created)}});
}

}  // namespace volgate::controller
