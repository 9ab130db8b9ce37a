// What a project may still create (limits) and what the controller runs (availability zones,
// services), in Cinder's shapes. volgate's "services" are the controller itself, acting as
// Cinder's scheduler, and one volume service per pool, on the host name the volume views use
// ("volgate@POOL"); a pool that cannot report its capacity is shown down.
#include <set>

#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"
#include "controller/domain/timestamp.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// Cinder's absolute limits for the resources volgate counts.
json limits_view(const QuotaUsage& usage) {
  auto limit = [&](const char* resource) { return usage.count(resource) ? usage.at(resource).limit : -1; };
  auto used = [&](const char* resource) { return usage.count(resource) ? usage.at(resource).in_use : 0; };
  return {{"rate", json::array()},
          {"absolute",
           {{"maxTotalVolumes", limit(kQuotaVolumes)},
            {"maxTotalSnapshots", limit(kQuotaSnapshots)},
            {"maxTotalVolumeGigabytes", limit(kQuotaGigabytes)},
            {"totalVolumesUsed", used(kQuotaVolumes)},
            {"totalSnapshotsUsed", used(kQuotaSnapshots)},
            {"totalGigabytesUsed", used(kQuotaGigabytes)},
            {"maxTotalBackups", limit(kQuotaBackups)},
            {"maxTotalBackupGigabytes", limit(kQuotaBackupGigabytes)},
            {"totalBackupsUsed", used(kQuotaBackups)},
            {"totalBackupGigabytesUsed", used(kQuotaBackupGigabytes)}}}};
}

bool pool_up(const PoolReport& pool) { return pool.state.total_gb > 0; }


json service_view(const ApiRequest& q, const char* binary, const std::string& host, const std::string& zone,
                  bool up, const std::string& now) {
  json s = {{"binary", binary},
            {"host", host},
            {"zone", zone},
            {"status", "enabled"},
            {"state", up ? "up" : "down"},
            // The controller answers for every service itself: they are as fresh as this answer.
            {"updated_at", now},
            {"disabled_reason", nullptr}};
  if (std::string_view(binary) == "cinder-volume") {
    s["replication_status"] = "disabled";
    s["active_backend_id"] = nullptr;
    s["frozen"] = false;
  }
  if (q.version.since(7)) s["cluster"] = nullptr;
  if (q.version.since(49) && std::string_view(binary) == "cinder-volume") s["backend_state"] = up ? "up" : "down";
  return s;
}

}  // namespace

void add_system_routes(Router& r, VolumeService& service) {
  r.add("GET", "/v3/{project}/limits", [&service](const ApiRequest& q) {
    const std::string& project = project_of(q);
    // Whose limits: cinderclient's `absolute-limits TENANT` sends tenant_id; 3.39 named it project_id.
    std::optional<std::string> target;
    for (const auto& [key, value] : q.query_items()) {
      if (key != "tenant_id" && (key != "project_id" || !q.version.since(39)))
        bad_request("Invalid filters " + key.substr(0, 64) + " are found in query options.");
      if (target && *target != value) bad_request("The query names more than one project.");
      target = value;
    }
    if (!target) target = project;
    checked_project_name(*target);
    return json_response(200, {{"limits", limits_view(service.quota_usage(*target))}});
  });

  r.add("GET", "/v3/{project}/os-availability-zone", [&service](const ApiRequest& q) {
    project_of(q);
    std::map<std::string, bool> zones;  // zone -> some pool in it is up
    for (const auto& pool : service.pools()) zones[pool.state.availability_zone] |= pool_up(pool);
    json list = json::array();
    for (const auto& [zone, available] : zones)
      list.push_back({{"zoneName", zone}, {"zoneState", {{"available", available}}}});
    return json_response(200, {{"availabilityZoneInfo", list}});
  });

  r.add("GET", "/v3/{project}/os-services", [&service](const ApiRequest& q) {
    project_of(q);
    std::string host_filter, binary_filter;
    for (const auto& [key, value] : q.query_items()) {
      if (key == "host") host_filter = value;
      else if (key == "binary") binary_filter = value;
      else bad_request("Invalid filters " + key.substr(0, 64) + " are found in query options.");
    }
    const std::string now = utc_timestamp();
    const auto pools = service.pools();
    json list = json::array();
    auto add = [&](json s) {
      if (!host_filter.empty() && s["host"] != host_filter) return;
      if (!binary_filter.empty() && s["binary"] != binary_filter) return;
      list.push_back(std::move(s));
    };
    add(service_view(q, "cinder-scheduler", "volgate", service.default_availability_zone(), true, now));
    for (const auto& pool : pools)
      add(service_view(q, "cinder-volume", "volgate@" + pool.state.name, pool.state.availability_zone,
                       pool_up(pool), now));
    return json_response(200, {{"services", list}});
  });
}

}  // namespace volgate::controller
