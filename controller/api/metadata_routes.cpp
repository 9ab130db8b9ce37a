// Volume metadata in Cinder's shapes: {"metadata": {...}} for the whole set, {"meta": {k: v}}
// for one key. Since 3.15 the set's GET carries an ETag that a PUT may send back as If-Match.
#include "controller/api/api_error.hpp"
#include "controller/api/request_parsing.hpp"
#include "controller/api/route_groups.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// The whole set, with its ETag from 3.15 on.
ApiResponse metadata_answer(const ApiRequest& q, const Metadata& metadata) {
  ApiResponse r = json_response(200, {{"metadata", metadata}});
  if (q.version.since(15)) r.headers.emplace_back("ETag", metadata_etag(metadata));
  return r;
}

Metadata metadata_body(const ApiRequest& q) {
  json j = parse_json(q.body);
  if (!j.is_object() || j.size() != 1 || !j.contains("metadata"))
    bad_request("The request body must be {\"metadata\": {\"key\": \"value\", ...}}.");
  return metadata_from_json(j["metadata"]);
}

}  // namespace

void add_volume_metadata_routes(Router& r, VolumeService& service) {
  r.add("GET", "/v3/{project}/volumes/{id}/metadata", [&service](const ApiRequest& q) {
    return metadata_answer(q, service.get_volume(project_of(q), q.param("id")).metadata);
  });
  // POST adds or replaces the keys given; PUT replaces the whole set.
  r.add("POST", "/v3/{project}/volumes/{id}/metadata", [&service](const ApiRequest& q) {
    Metadata given = metadata_body(q);
    return metadata_answer(q, service.set_volume_metadata(project_of(q), q.param("id"), given, true));
  });
  r.add("PUT", "/v3/{project}/volumes/{id}/metadata", [&service](const ApiRequest& q) {
    Metadata given = metadata_body(q);
    const std::string if_match = q.version.since(15) ? q.headers.if_match : std::string();
    return metadata_answer(q, service.set_volume_metadata(project_of(q), q.param("id"), given, false, if_match));
  });

  r.add("GET", "/v3/{project}/volumes/{id}/metadata/{key}", [&service](const ApiRequest& q) {
    const Metadata metadata = service.get_volume(project_of(q), q.param("id")).metadata;
    const std::string key = url_decode(q.param("key"), false);
    auto it = metadata.find(key);
    if (it == metadata.end()) not_found("Volume " + q.param("id") + " has no metadata key '" + key + "'.");
    return json_response(200, {{"meta", {{it->first, it->second}}}});
  });
  r.add("PUT", "/v3/{project}/volumes/{id}/metadata/{key}", [&service](const ApiRequest& q) {
    const std::string key = url_decode(q.param("key"), false);
    json j = parse_json(q.body);
    if (!j.is_object() || j.size() != 1 || !j.contains("meta"))
      bad_request("The request body must be {\"meta\": {\"" + key + "\": \"value\"}}.");
    Metadata given = metadata_from_json(j["meta"], "meta");
    if (given.size() != 1) bad_request("The request body must hold exactly one metadata item.");
    if (given.begin()->first != key)
      bad_request("The key in the request body ('" + given.begin()->first + "') is not the one in the path ('" +
                  key + "').");
    service.set_volume_metadata(project_of(q), q.param("id"), given, true);
    return json_response(200, {{"meta", given}});
  });
  r.add("DELETE", "/v3/{project}/volumes/{id}/metadata/{key}", [&service](const ApiRequest& q) {
    service.delete_volume_metadata(project_of(q), q.param("id"), url_decode(q.param("key"), false));
    return ApiResponse{200, "", {}};
  });
}

}  // namespace volgate::controller
