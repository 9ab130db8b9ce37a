// Nova's server resources, read-only for now: the libvirt domains on this host as servers
// (GET /v2.1/servers[/detail], GET /v2.1/servers/{id}), identified by UUID, or by name where
// exactly one domain has it. Nova's project-scoped form (/v2.1/{project}/servers) is accepted
// too, as novaclient may use either.
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// Nova's status and power state for a domain state.
std::pair<const char*, int> nova_status(ServerState state) {
  switch (state) {
    case ServerState::running: return {"ACTIVE", 1};   // power_state RUNNING
    case ServerState::paused: return {"PAUSED", 3};    // PAUSED
    case ServerState::shut_off: return {"SHUTOFF", 4}; // SHUTDOWN
    case ServerState::other: break;
  }
  return {"UNKNOWN", 0};  // NOSTATE
}

json summary(const Server& s) { return {{"id", s.uuid}, {"name", s.name}, {"links", json::array()}}; }

json detail(const Server& s) {
  auto [status, power] = nova_status(s.state);
  json j = summary(s);
  j["status"] = status;
  j["OS-EXT-STS:power_state"] = power;
  j["OS-EXT-STS:vm_state"] = vm_state(s.state);
  j["OS-EXT-STS:task_state"] = nullptr;
  j["OS-EXT-SRV-ATTR:instance_name"] = s.name;
  j["volgate:persistent"] = s.persistent;
  return j;
}

}  // namespace

void add_server_routes(Router& r, Hypervisor& hypervisor) {
  auto list = [&hypervisor](bool detailed) {
    return [&hypervisor, detailed](const ApiRequest&) {
      json servers = json::array();
      for (const auto& s : hypervisor.with_driver([](VirtDriver& d) { return d.list_servers(); }))
        servers.push_back(detailed ? detail(s) : summary(s));
      return json_response(200, {{"servers", servers}});
    };
  };
  auto show = [&hypervisor](const ApiRequest& q) {
    const std::string& id = q.param("id");
    auto server = hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(id); });
    if (!server) not_found("Instance " + id + " could not be found.");
    return json_response(200, {{"server", detail(*server)}});
  };
  for (const char* prefix : {"/v2.1", "/v2.1/{project}"}) {
    const std::string p = prefix;
    r.add("GET", p + "/servers", list(false));
    r.add("GET", p + "/servers/detail", list(true));
    r.add("GET", p + "/servers/{id}", show);
  }
}

}  // namespace volgate::controller
