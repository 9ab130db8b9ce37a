// Nova's volume attachments of a server (os-volume_attachments): attach (POST), list and show
// (GET), detach (DELETE, 202). Attach and detach run whole before the answer, so a client that
// polls as it would with Nova finds them done.
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

json attachment_view(const BlockDeviceMapping& m) {
  return {{"id", m.volume_id},
          {"serverId", m.server_id},
          {"volumeId", m.volume_id},
          {"device", m.device},
          {"tag", m.tag.empty() ? json(nullptr) : json(m.tag)},
          {"delete_on_termination", m.delete_on_termination},
          {"attachment_id", m.attachment_id},
          {"bdm_uuid", m.id}};
}

// Nova's project-scoped URLs (/v2.1/{project}/servers/...) act in that project; the bare ones
// (/v2.1/servers/...) in the default one, as the token here is the operator's.
std::string project_in(const ApiRequest& q) {
  return q.params.count("project") ? project_of(q) : std::string("default");
}

}  // namespace

void add_volume_attachment_routes(Router& r, ComputeService& compute) {
  for (const std::string prefix : {"/v2.1/servers/{server}", "/v2.1/{project}/servers/{server}"}) {
    const std::string base = prefix + "/os-volume_attachments";
    r.add("POST", base, [&compute](const ApiRequest& q) {
      json a = parse_body(q.body, "volumeAttachment", {"volumeId", "device", "tag", "delete_on_termination"});
      AttachVolumeRequest request{.project = project_in(q), .server = q.param("server")};
      request.volume_id = opt_string(a, "volumeId");
      if (request.volume_id.empty()) bad_request("'volumeId' is required.");
      check_length(request.volume_id, "volumeId");
      request.device = opt_string(a, "device");
      request.tag = opt_string(a, "tag");
      check_length(request.tag, "tag", 60);
      request.delete_on_termination = opt_boolean(a, "delete_on_termination").value_or(false);
      return json_response(200, {{"volumeAttachment", attachment_view(compute.attach_volume(request))}});
    });
    r.add("GET", base, [&compute](const ApiRequest& q) {
      json list = json::array();
      for (const auto& m : compute.volume_attachments(project_in(q), q.param("server")))
        list.push_back(attachment_view(m));
      return json_response(200, {{"volumeAttachments", list}});
    });
    r.add("GET", base + "/{volume}", [&compute](const ApiRequest& q) {
      return json_response(200, {{"volumeAttachment", attachment_view(compute.volume_attachment(
                                                          project_in(q), q.param("server"), q.param("volume")))}});
    });
    r.add("DELETE", base + "/{volume}", [&compute](const ApiRequest& q) {
      compute.detach_volume(project_in(q), q.param("server"), q.param("volume"));
      return ApiResponse{202, ""};
    });
  }
}

}  // namespace volgate::controller
