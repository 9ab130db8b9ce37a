// Nova's server resources: the libvirt domains on this host as servers
// (GET /v2.1/servers[/detail], GET /v2.1/servers/{id}), identified by UUID, or by name where
// exactly one domain has it. Nova's project-scoped form (/v2.1/{project}/servers) is accepted
// too, as novaclient may use either. The detail has every field Nova's has at the request's
// microversion, filled from what libvirt and the controller know (a domain has no image,
// networks or key pair here: those are empty as in a server booted from a volume).
#include <regex>

#include "controller/api/access_policy.hpp"
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// Nova's status and power state for a domain state (its vm_state: compute_service.hpp).
struct NovaState {
  const char* status;
  int power_state;
};

NovaState nova_state(ServerState state) {
  switch (state) {
    case ServerState::running: return {"ACTIVE", 1};     // power_state RUNNING
    case ServerState::paused: return {"PAUSED", 3};      // PAUSED
    case ServerState::shut_off: return {"SHUTOFF", 4};   // SHUTDOWN
    case ServerState::other: break;
  }
  return {"UNKNOWN", 0};  // NOSTATE
}

json links(const ApiRequest& q, const Server& s) {
  const std::string base = q.headers.host.empty() ? "" : "http://" + q.headers.host;
  return json::array({{{"rel", "self"}, {"href", base + "/v2.1/servers/" + s.uuid}},
                      {{"rel", "bookmark"}, {"href", base + "/servers/" + s.uuid}}});
}

json summary(const ApiRequest& q, const Server& s) {
  return {{"id", s.uuid}, {"name", s.name}, {"links", links(q, s)}};
}

json detail(const ApiRequest& q, const Server& s, ComputeService* compute) {
  const NovaState state = nova_state(s.state);
  const auto& v = q.version;
  json j = summary(q, s);
  j["status"] = state.status;
  j["tenant_id"] = s.project.empty() ? compute_project_of(q) : s.project;
  j["user_id"] = "volgate";
  j["metadata"] = json::object();
  j["hostId"] = "";
  j["image"] = "";  // booted from a disk, not an image
  if (v.since(47))
    j["flavor"] = {{"vcpus", s.vcpus},   {"ram", s.memory_mib}, {"disk", 0},
                   {"ephemeral", 0},     {"swap", 0},           {"original_name", "libvirt-domain"},
                   {"extra_specs", json::object()}};
  else
    j["flavor"] = {{"id", "libvirt-domain"}, {"links", json::array()}};
  j["addresses"] = json::object();
  j["accessIPv4"] = "";
  j["accessIPv6"] = "";
  j["progress"] = 0;
  j["config_drive"] = "";
  j["key_name"] = nullptr;
  j["OS-DCF:diskConfig"] = "MANUAL";
  j["OS-EXT-STS:vm_state"] = vm_state(s.state);
  j["OS-EXT-STS:power_state"] = state.power_state;
  j["OS-EXT-STS:task_state"] = nullptr;
  j["OS-SRV-USG:launched_at"] = nullptr;
  j["OS-SRV-USG:terminated_at"] = nullptr;
  j["OS-EXT-SRV-ATTR:instance_name"] = s.name;
  json volumes = json::array();
  if (compute) {
    j["OS-EXT-AZ:availability_zone"] = compute->availability_zone();
    j["OS-EXT-SRV-ATTR:host"] = compute->host();
    j["OS-EXT-SRV-ATTR:hypervisor_hostname"] = compute->host();
    for (const auto& m : compute->mappings_of(s.uuid)) {
      json entry = {{"id", m.volume_id}};
      if (v.since(3)) entry["delete_on_termination"] = m.delete_on_termination;
      volumes.push_back(entry);
    }
  }
  j["os-extended-volumes:volumes_attached"] = volumes;
  if (v.since(3)) {
    j["OS-EXT-SRV-ATTR:hostname"] = s.name;
    j["OS-EXT-SRV-ATTR:reservation_id"] = "";
    j["OS-EXT-SRV-ATTR:launch_index"] = 0;
    j["OS-EXT-SRV-ATTR:kernel_id"] = "";
    j["OS-EXT-SRV-ATTR:ramdisk_id"] = "";
    j["OS-EXT-SRV-ATTR:root_device_name"] = nullptr;
  }
  if (v.since(9)) j["locked"] = false;
  if (v.since(16)) j["host_status"] = "UP";
  if (v.since(19)) j["description"] = nullptr;
  if (v.since(26)) j["tags"] = json::array();
  if (v.since(63)) j["trusted_image_certificates"] = nullptr;
  if (v.since(73)) j["locked_reason"] = nullptr;
  j["volgate:persistent"] = s.persistent;
  return j;
}

// Nova's list filters that mean something here; the others (flavor, image, ip, ...) match
// every domain, as no domain has one, and are ignored as Nova ignores unknown ones.
struct ServerFilter {
  std::optional<std::regex> name;  // a regular expression, as in Nova
  std::optional<std::string> status;

  explicit ServerFilter(const ApiRequest& q) {
    if (auto n = q.query_value("name")) {
      if (n->size() > 255) bad_request("Invalid input for query parameter name: longer than 255 characters.");
      try {
        name.emplace(*n, std::regex::extended | std::regex::nosubs);
      } catch (const std::regex_error&) {
        bad_request("Invalid input for query parameter name: not a regular expression.");
      }
    }
    if (auto st = q.query_value("status")) status = *st;
  }
  bool matches(const Server& s) const {
    if (name && !std::regex_search(s.name, *name)) return false;
    if (status && strcasecmp(status->c_str(), nova_state(s.state).status) != 0) return false;
    return true;
  }
};

}  // namespace

void add_server_routes(Router& r, Hypervisor& hypervisor, ComputeService* compute) {
  auto list = [&hypervisor, compute](bool detailed) {
    return [&hypervisor, compute, detailed](const ApiRequest& q) {
      const ServerFilter filter(q);
      json servers = json::array();
      for (const auto& s : hypervisor.with_driver([](VirtDriver& d) { return d.list_servers(); }))
        if (filter.matches(s) && may_see_server(q.headers.caller, s.project))
          servers.push_back(detailed ? detail(q, s, compute) : summary(q, s));
      return json_response(200, {{"servers", servers}});
    };
  };
  auto show = [&hypervisor, compute](const ApiRequest& q) {
    const std::string& id = q.param("id");
    auto server = hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(id); });
    if (!server) not_found("Instance " + id + " could not be found.");
    json j = detail(q, *server, compute);
    if (q.version.since(71)) j["server_groups"] = json::array();
    return json_response(200, {{"server", j}});
  };
  for (const char* prefix : {"/v2.1", "/v2.1/{project}"}) {
    const std::string p = prefix;
    r.add("GET", p + "/servers", list(false));
    r.add("GET", p + "/servers/detail", list(true));
    r.add("GET", p + "/servers/{id}", show);
  }
}

}  // namespace volgate::controller
