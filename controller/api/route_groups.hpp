#pragma once
// Groups of routes VolumeApi adds beside its volume and snapshot ones, each in its own file.
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

// The answer for a path no route matches: Cinder's resources that volgate does not offer
// (groups, transfers, QoS, ...) get a 404 saying so; anything else is an unknown path
// (unsupported_resources.cpp).
ApiResponse answer_unmatched(const ApiRequest& request);

}  // namespace volgate::controller
