#pragma once
// What the compute flows (attach and detach a volume to a server: Nova's side) use: the store
// (mappings, the flow journal), the volume service as Nova uses Cinder (through its attachment
// API, never its insides), the hypervisor, and this host's name for connectors.
#include <string>

#include "controller/flows/flow.hpp"
#include "controller/store/store.hpp"
#include "controller/virt/hypervisor.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {

struct ComputeServices {
  Store& store;
  VolumeService& volumes;
  Hypervisor& hypervisor;
  std::string host;  // this host's name: the connector's "host"
  BeforeTask before_task;
  // Nova's [cinder] cross_az_attach: a volume in another availability zone than the servers'
  // (this host's, the controller's default zone) may be attached.
  bool cross_az_attach = false;
};

}  // namespace volgate::controller
