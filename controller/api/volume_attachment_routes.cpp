// Nova's volume attachments of a server (os-volume_attachments): attach (POST), list and show
// (GET), detach (DELETE, 202). Attach and detach run whole before the answer, so a client that
// polls as it would with Nova finds them done. Shapes follow the compute microversion: `tag`
// may be asked for from 2.49 and is shown from 2.70, `delete_on_termination` both from 2.79,
// and from 2.89 the attachment shows its Cinder attachment and mapping ids instead of "id".
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

json attachment_view(const ApiRequest& q, const BlockDeviceMapping& m) {
  json j = {{"serverId", m.server_id}, {"volumeId", m.volume_id}, {"device", m.device}};
  if (!q.version.since(89)) j["id"] = m.volume_id;
  if (q.version.since(70)) j["tag"] = m.tag.empty() ? json(nullptr) : json(m.tag);
  if (q.version.since(79)) j["delete_on_termination"] = m.delete_on_termination;
  if (q.version.since(89)) {
    j["attachment_id"] = m.attachment_id;
    j["bdm_uuid"] = m.id;
  }
  return j;
}

AttachVolumeRequest attach_request(const ApiRequest& q) {
  // "volgate:bus" (scsi or virtio) is volgate's: Nova takes the bus from the image's properties.
  json a = parse_body(q.body, "volumeAttachment", {"volumeId", "device", "tag", "delete_on_termination", "volgate:bus"});
  // Nova's schema before these versions has no such fields, and refuses what it does not know.
  for (auto [field, since] : {std::pair{"tag", 49}, std::pair{"delete_on_termination", 79}})
    if (a.contains(field) && !q.version.since(since))
      bad_request(std::string("Invalid input for field/attribute volumeAttachment. Additional properties are not "
                              "allowed ('") + field + "' was unexpected) before microversion 2." +
                  std::to_string(since) + ".");
  AttachVolumeRequest request{.project = compute_project_of(q), .server = q.param("server"),
                              .request_id = q.headers.request_id};
  request.volume_id = opt_string(a, "volumeId");
  if (request.volume_id.empty()) bad_request("'volumeId' is required.");
  check_length(request.volume_id, "volumeId");
  request.device = opt_string(a, "device");  // null or absent: the next free name
  check_length(request.device, "device", 255);
  request.bus = opt_string(a, "volgate:bus");
  request.tag = opt_string(a, "tag");
  check_length(request.tag, "tag", 60);
  request.delete_on_termination = opt_boolean(a, "delete_on_termination").value_or(false);
  return request;
}

}  // namespace

void add_volume_attachment_routes(Router& r, ComputeService& compute) {
  for (const std::string prefix : {"/v2.1/servers/{server}", "/v2.1/{project}/servers/{server}"}) {
    const std::string base = prefix + "/os-volume_attachments";
    r.add("POST", base, [&compute](const ApiRequest& q) {
      return json_response(200, {{"volumeAttachment", attachment_view(q, compute.attach_volume(attach_request(q)))}});
    });
    r.add("GET", base, [&compute](const ApiRequest& q) {
      json list = json::array();
      for (const auto& m : compute.volume_attachments(compute_project_of(q), q.param("server")))
        list.push_back(attachment_view(q, m));
      return json_response(200, {{"volumeAttachments", list}});
    });
    r.add("GET", base + "/{volume}", [&compute](const ApiRequest& q) {
      const auto m = compute.volume_attachment(compute_project_of(q), q.param("server"), q.param("volume"));
      return json_response(200, {{"volumeAttachment", attachment_view(q, m)}});
    });
    r.add("DELETE", base + "/{volume}", [&compute](const ApiRequest& q) {
      compute.detach_volume(compute_project_of(q), q.param("server"), q.param("volume"), q.headers.request_id);
      return ApiResponse{202, ""};
    });
  }
}

}  // namespace volgate::controller
