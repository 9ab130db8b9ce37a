#pragma once
// Attaching a volume to a server, in Nova's order: check the server and the volume, reserve the
// device name (the mapping row), create the Cinder attachment (volume reserved), send this
// host's connector (the gateway serves the volume), attach the disk through libvirt (live and
// persistent, or persistent only for a shut-off server), complete the attachment (volume
// in-use). Any failure reverts what ran: the disk detached, the attachment deleted (its export
// with it), the mapping destroyed, the volume available.
#include <string>
#include <vector>

#include "controller/compute/compute_services.hpp"

namespace volgate::controller {

struct AttachVolumeContext {
  FlowOutcome outcome;
  std::string request_id;  // the action log's entry
  std::string project;
  std::string server_id;
  std::string volume_id;
  std::string device;  // asked for, or chosen by reserve_device
  std::string bus;     // asked for (scsi, virtio), else the device's, else scsi
  std::string tag;
  bool delete_on_termination = false;
  std::string mapping_id;
  std::string attachment_id;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(AttachVolumeContext, outcome, request_id, project, server_id, volume_id,
                                                device, bus, tag, delete_on_termination, mapping_id, attachment_id)

struct AttachVolumeFlow {
  using Context = AttachVolumeContext;
  static constexpr const char* kind = "attach_volume";
  static constexpr const char* answer_after = "finish_action";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(ComputeServices& s);
};

}  // namespace volgate::controller
