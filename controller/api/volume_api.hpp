#pragma once
// The REST API of the volume service, shaped like Cinder's v3 API (microversions 3.0 to
// kMaxApiVersion, see api_version.hpp) for the same operations:
//   GET / (the versions), GET /v3,
//   GET|POST /v3/{project}/volumes, GET /v3/{project}/volumes/detail, GET .../volumes/summary,
//   GET|PUT|DELETE /v3/{project}/volumes/{id}, POST /v3/{project}/volumes/{id}/action {"os-extend": ...},
//   volume metadata (metadata_routes.cpp),
//   GET|POST /v3/{project}/snapshots[/detail], GET|PUT|DELETE /v3/{project}/snapshots/{id},
//   GET|PUT /v3/{project}/os-quota-sets/{project}[?usage=true], GET .../os-quota-sets/{project}/defaults,
//   GET /v3/{project}/scheduler-stats/get_pools[?detail=true], GET /v3/{project}/types[/{name}[/extra_specs]],
//   limits, availability zones and services (system_routes.cpp).
// Errors carry Cinder's fault bodies: {"badRequest": {"message": ..., "code": 400}}; Cinder
// resources volgate does not offer get a 404 saying so (unsupported_resources.cpp).
// The transport (sockets, token) is ApiServer's; this class maps one request to one response.
#include <string>
#include <string_view>

#include "controller/api/router.hpp"
#include "controller/compute/compute_service.hpp"
#include "controller/virt/hypervisor.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {

class VolumeApi {
 public:
  // `hypervisor`: the servers API (Nova's) is served when given; with `compute`, volumes attach
  // to those servers too.
  explicit VolumeApi(VolumeService& service, Hypervisor* hypervisor = nullptr, ComputeService* compute = nullptr);

  // `target` is the request target (path and query). Never throws. Answers under /v3 carry
  // the microversion they were made in (OpenStack-API-Version, Vary).
  ApiResponse handle(const std::string& method, const std::string& target, const std::string& body,
                     const RequestHeaders& headers = {});
  // Whether a request may go without the token: only the versions document, which clients
  // read before they authenticate (as Cinder serves it).
  static bool open_to_anyone(std::string_view method, std::string_view target);

 private:
  ApiResponse create_volume(const ApiRequest& request);
  ApiResponse volume_action(const ApiRequest& request);
  ApiResponse upload_to_image(const ApiRequest& request);
  ApiResponse create_snapshot(const ApiRequest& request);
  void check_server_owner(std::string_view path, const Caller& caller);
  std::string admin_target(const std::string& target, const Caller& caller);

  VolumeService& service_;
  Hypervisor* hypervisor_;
  Router router_;  // every route, in the constructor
};

// The fault body for an error, as Cinder shapes it.
ApiResponse error_response(int status, std::string_view fault, const std::string& message);

}  // namespace volgate::controller
