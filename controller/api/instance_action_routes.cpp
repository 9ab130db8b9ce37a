// Nova's action log of a server (os-instance-actions): GET .../os-instance-actions lists the
// requests that changed the server, newest first; GET .../os-instance-actions/{request_id}
// shows one with its events. Shapes follow the compute microversion: `updated_at` from 2.58,
// the events' `host` and `hostId` from 2.62, their `details` (why one failed) from 2.84.
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

json or_null(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

json action_view(const ApiRequest& q, const InstanceAction& a) {
  json j = {{"action", a.action},
            {"instance_uuid", a.server_id},
            {"request_id", a.request_id},
            {"user_id", "volgate"},
            {"project_id", a.project},
            {"start_time", a.start_time},
            {"message", or_null(a.message)}};
  if (q.version.since(58)) j["updated_at"] = a.updated_at;
  return j;
}

json event_view(const ApiRequest& q, const InstanceActionEvent& e, const std::string& host) {
  json j = {{"event", e.event},
            {"start_time", e.start_time},
            {"finish_time", or_null(e.finish_time)},
            {"result", or_null(e.result)},
            {"traceback", nullptr}};
  if (q.version.since(62)) {
    j["host"] = host;
    j["hostId"] = "";
  }
  if (q.version.since(84)) j["details"] = or_null(e.details);
  return j;
}

}  // namespace

void add_instance_action_routes(Router& r, ComputeService& compute) {
  for (const std::string prefix : {"/v2.1/servers/{server}", "/v2.1/{project}/servers/{server}"}) {
    const std::string base = prefix + "/os-instance-actions";
    r.add("GET", base, [&compute](const ApiRequest& q) {
      json list = json::array();
      for (const auto& a : compute.actions(q.param("server"))) list.push_back(action_view(q, a));
      return json_response(200, {{"instanceActions", list}});
    });
    r.add("GET", base + "/{request}", [&compute](const ApiRequest& q) {
      const InstanceAction a = compute.action(q.param("server"), q.param("request"));
      json j = action_view(q, a);
      json events = json::array();
      for (const auto& e : a.events) events.push_back(event_view(q, e, compute.host()));
      j["events"] = events;
      return json_response(200, {{"instanceAction", j}});
    });
  }
}

}  // namespace volgate::controller
