// Nova's server actions that volgate offers: POST /v2.1[/{project}]/servers/{id}/action with
// {"os-start": null} or {"os-stop": null}, answered 202 as Nova does (the stop goes on in the
// background; the start has booted the domain by then), 409 when the server's state does not
// allow it.
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {

void add_server_action_routes(Router& r, ComputeService& compute) {
  auto action = [&compute](const ApiRequest& q) {
    nlohmann::json j = parse_json(q.body);
    if (!j.is_object() || j.size() != 1)
      bad_request("A server action body is an object with exactly one action: {\"os-start\": null} or "
                  "{\"os-stop\": null}.");
    const std::string name = j.begin().key();
    if (!j.begin().value().is_null())
      bad_request("Action '" + name + "' takes no arguments: {\"" + name + "\": null}.");
    if (name == "os-start") {
      compute.start_server(q.param("id"));
    } else if (name == "os-stop") {
      compute.stop_server(q.param("id"));
    } else {
      bad_request("volgate does not offer the server action '" + name + "' (only os-start and os-stop).");
    }
    return ApiResponse{202, ""};
  };
  for (const char* prefix : {"/v2.1", "/v2.1/{project}"})
    r.add("POST", std::string(prefix) + "/servers/{id}/action", action);
}

}  // namespace volgate::controller
