// Cinder's attachment API (microversion 3.27 on; os-complete from 3.44): a host reserves a
// volume for an instance, sends its connector to get connection info, says when it has
// attached, and deletes the attachment when it has let the volume go.
#include "controller/api/access_policy.hpp"
#include "controller/api/api_error.hpp"
#include "controller/api/attachment_view.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

void require_version(const ApiRequest& q, int minor) {
  if (!q.version.since(minor))
    not_found("The attachments API needs microversion 3." + std::to_string(minor) +
              " or later (OpenStack-API-Version: volume 3." + std::to_string(minor) + "); this request asked for " +
              q.version.text() + ".");
}

// A connector as hosts send it: an object whose "host", when given, is a non-empty string.
// Returns its JSON text and its host.
std::pair<std::string, std::string> connector_field(const json& connector) {
  if (!connector.is_object()) bad_request("'connector' must be an object (the host's connector properties).");
  std::string host;
  if (connector.contains("host") && !connector["host"].is_null()) {
    if (!connector["host"].is_string() || connector["host"].get<std::string>().empty())
      bad_request("'connector.host' must be a non-empty string.");
    host = connector["host"].get<std::string>();
    check_length(host, "connector.host");
  }
  return {json_text(connector), host};
}

json list_answer(VolumeService& service, const std::vector<Attachment>& attachments, bool detail) {
  json list = json::array();
  for (const auto& a : attachments)
    list.push_back(detail ? attachment_detail(service, a) : attachment_summary(a));
  return {{"attachments", list}};
}

}  // namespace

void add_attachment_routes(Router& r, VolumeService& service) {
  r.add("POST", "/v3/{project}/attachments", [&service](const ApiRequest& q) {
    require_version(q, 27);
    json a = parse_body(q.body, "attachment", {"volume_uuid", "instance_uuid", "connector", "mode"});
    CreateAttachmentRequest request;
    request.project = project_of(q);
    request.volume_id = opt_string(a, "volume_uuid");
    if (request.volume_id.empty()) bad_request("'volume_uuid' is required.");
    check_length(request.volume_id, "volume_uuid");
    request.instance_uuid = opt_string(a, "instance_uuid");
    check_length(request.instance_uuid, "instance_uuid");
    const std::string mode = opt_string(a, "mode");
    if (!mode.empty() && mode != "rw" && mode != "ro") bad_request("'mode' must be \"rw\" or \"ro\".");
    request.read_only = mode == "ro";
    // An empty connector is none, as in Cinder (cinderclient sends {} without --connect).
    if (a.contains("connector") && !a["connector"].is_null() && !(a["connector"].is_object() && a["connector"].empty()))
      std::tie(request.connector, request.host) = connector_field(a["connector"]);
    Attachment created = service.create_attachment(request);
    return json_response(200, {{"attachment", attachment_detail(service, created)}});
  });

  r.add("PUT", "/v3/{project}/attachments/{id}", [&service](const ApiRequest& q) {
    require_version(q, 27);
    json a = parse_body(q.body, "attachment", {"connector"});
    if (!a.contains("connector") || a["connector"].is_null()) bad_request("'connector' is required.");
    auto [connector, host] = connector_field(a["connector"]);
    Attachment updated = service.update_attachment(project_of(q), q.param("id"), connector, host);
    return json_response(200, {{"attachment", attachment_detail(service, updated)}});
  });

  r.add("POST", "/v3/{project}/attachments/{id}/action", [&service](const ApiRequest& q) {
    require_version(q, 44);
    json j = parse_json(q.body);
    if (!j.is_object() || j.size() != 1 || !j.contains("os-complete"))
      bad_request("An attachment action body is {\"os-complete\": null}.");
    service.complete_attachment(project_of(q), q.param("id"));
    return ApiResponse{204, ""};
  });

  r.add("DELETE", "/v3/{project}/attachments/{id}", [&service](const ApiRequest& q) {
    require_version(q, 27);
    return json_response(200, list_answer(service, service.delete_attachment(project_of(q), q.param("id")), false));
  });

  r.add("GET", "/v3/{project}/attachments/{id}", [&service](const ApiRequest& q) {
    require_version(q, 27);
    return json_response(200,
                         {{"attachment", attachment_detail(service, service.get_attachment(project_of(q), q.param("id")))}});
  });

  auto list = [&service](bool detail) {
    return [&service, detail](const ApiRequest& q) {
      require_version(q, 27);
      std::vector<Attachment> all = service.list_attachments(listed_project(q));
      // Cinder's filters for this list: by volume and by instance.
      const auto volume = q.query_value("volume_id");
      const auto instance = q.query_value("instance_id");
      std::erase_if(all, [&](const Attachment& a) {
        return (volume && a.volume_id != *volume) || (instance && a.instance_uuid != *instance);
      });
      return json_response(200, list_answer(service, all, detail));
    };
  };
  r.add("GET", "/v3/{project}/attachments", list(false));
  r.add("GET", "/v3/{project}/attachments/detail", list(true));
}

}  // namespace volgate::controller
