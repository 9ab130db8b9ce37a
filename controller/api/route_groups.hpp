#pragma once
// Groups of routes VolumeApi adds beside its volume and snapshot ones, each in its own file.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "controller/api/router.hpp"
#include "controller/compute/compute_service.hpp"
#include "controller/virt/hypervisor.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {

// GET|POST|PUT /v3/{project}/volumes/{id}/metadata, GET|PUT|DELETE .../metadata/{key}
// (metadata_routes.cpp).
void add_volume_metadata_routes(Router& router, VolumeService& service);

// GET /v3/{project}/limits, /os-availability-zone, /os-services: what the project may still
// create and what the controller runs (system_routes.cpp).
void add_system_routes(Router& router, VolumeService& service);

// POST|GET /v3/{project}/backups[/detail], GET|PUT|DELETE .../backups/{id}, POST
// .../backups/{id}/restore: Cinder's backups (backup_routes.cpp).
void add_backup_routes(Router& router, VolumeService& service);

// POST|GET /v3/{project}/attachments[/detail], GET|PUT|DELETE .../attachments/{id},
// POST .../attachments/{id}/action (attachment_routes.cpp).
void add_attachment_routes(Router& router, VolumeService& service);

// GET /v2.1/servers[/detail], GET /v2.1/servers/{id}: the hypervisor's domains as Nova's
// servers (server_routes.cpp).
// With `compute`, a server shows its attached volumes and availability zone.
void add_server_routes(Router& router, Hypervisor& hypervisor, ComputeService* compute);

// POST|GET /v2.1[/{project}]/servers/{server}/os-volume_attachments, GET|DELETE .../{volume}:
// Nova's volume attach and detach (volume_attachment_routes.cpp).
void add_volume_attachment_routes(Router& router, ComputeService& compute);

// GET /v2.1[/{project}]/servers/{server}/os-instance-actions[/{request_id}]: the server's action
// log (instance_action_routes.cpp).
void add_instance_action_routes(Router& router, ComputeService& compute);
// POST /v2.1[/{project}]/servers/{id}/action: os-start and os-stop (server_action_routes.cpp).
void add_server_action_routes(Router& router, ComputeService& compute);

// An admin's repairs (admin_actions.cpp): a volume action's answer when `action` is
// os-reset_status or os-force_delete (the caller is known to be an admin), nullopt for any
// other action; POST /v3/{project}/snapshots/{id}/action with the same two.
std::optional<ApiResponse> admin_volume_action(VolumeService& service, const ApiRequest& request,
                                               const std::string& action, const nlohmann::json& value);
void add_snapshot_action_routes(Router& router, VolumeService& service);

// The answer for a path no route matches: Cinder's resources that volgate does not offer
// (groups, transfers, QoS, ...) get a 404 saying so; anything else is an unknown path
// (unsupported_resources.cpp).
ApiResponse answer_unmatched(const ApiRequest& request);

}  // namespace volgate::controller
