#pragma once
// Detaching a volume from a server, in Nova's order: the volume begins detaching, libvirt
// detaches the disk (live, waiting for the guest to let go, with retries; and from the
// definition), the Cinder attachment is deleted (the export goes when nothing else on this host
// uses it), the mapping is destroyed. A guest that keeps the disk fails the detach: the volume
// is rolled back to in-use with its mapping and export intact. A restarted controller finishes
// a detach whose disk is already out of the guest, and rolls back one whose disk is not.
#include <string>
#include <vector>

#include "controller/compute/compute_services.hpp"

namespace volgate::controller {

struct DetachVolumeContext {
  FlowOutcome outcome;
  std::string request_id;  // the action log's entry
  std::string project;
  std::string server_id;
  std::string volume_id;
  std::string mapping_id;
  std::string attachment_id;
  bool began = false;  // this flow set the volume detaching
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DetachVolumeContext, outcome, request_id, project, server_id, volume_id,
                                                mapping_id, attachment_id, began)

struct DetachVolumeFlow {
  using Context = DetachVolumeContext;
  static constexpr const char* kind = "detach_volume";
  static constexpr const char* answer_after = "finish_action";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(ComputeServices& s);
};

}  // namespace volgate::controller
