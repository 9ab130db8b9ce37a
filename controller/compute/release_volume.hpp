#pragma once
// Releasing a volume whose disk left its server without the controller: the domain was
// undefined (or, transient, stopped), or the disk was detached by hand (virsh detach-disk). The
// detach's second half, as Nova cleans up the volumes of an instance deleted underneath it: the
// volume begins detaching, the Cinder attachment is deleted (the export goes with it when
// nothing else on this host uses it), the mapping is destroyed; the volume is available again.
// Nothing is asked of libvirt: the disk is already gone. A restarted controller finishes it.
#include <string>
#include <vector>

#include "controller/compute/compute_services.hpp"

namespace volgate::controller {

struct ReleaseVolumeContext {
  FlowOutcome outcome;
  std::string project;
  std::string server_id;
  std::string volume_id;
  std::string mapping_id;
  std::string attachment_id;
  bool began = false;  // this flow set the volume detaching
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ReleaseVolumeContext, outcome, project, server_id, volume_id,
                                                mapping_id, attachment_id, began)

struct ReleaseVolumeFlow {
  using Context = ReleaseVolumeContext;
  static constexpr const char* kind = "release_volume";
  static constexpr OnRestart on_restart = OnRestart::resume;
  static std::vector<Task<Context>> tasks(ComputeServices& s);
};

}  // namespace volgate::controller
