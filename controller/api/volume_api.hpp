#pragma once
// The REST API of the volume service, shaped like Cinder's v3 API for the same operations:
//   GET|POST /v3/{project}/volumes, GET /v3/{project}/volumes/detail,
//   GET|DELETE /v3/{project}/volumes/{id}, POST /v3/{project}/volumes/{id}/action {"os-extend": ...},
//   GET|POST /v3/{project}/snapshots[/detail], GET|DELETE /v3/{project}/snapshots/{id},
//   GET|PUT /v3/{project}/os-quota-sets/{project}[?usage=true],
//   GET /v3/{project}/scheduler-stats/get_pools[?detail=true], GET /v3/{project}/types[/{name}].
// Errors carry Cinder's fault bodies: {"badRequest": {"message": ..., "code": 400}}.
// The transport (sockets, token) is ApiServer's; this class maps one request to one response.
#include <string>

#include "controller/api/router.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {

class VolumeApi {
 public:
  explicit VolumeApi(VolumeService& service);

  // `target` is the request target (path and query). Never throws.
  ApiResponse handle(const std::string& method, const std::string& target, const std::string& body);

 private:
  ApiResponse create_volume(const ApiRequest& request);
  ApiResponse volume_action(const ApiRequest& request);
  ApiResponse create_snapshot(const ApiRequest& request);

  VolumeService& service_;
  Router router_;  // every route, in the constructor
};

// The fault body for an error, as Cinder shapes it.
ApiResponse error_response(int status, std::string_view fault, const std::string& message);

}  // namespace volgate::controller
