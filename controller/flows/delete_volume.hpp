#pragma once
// Deleting a volume: refused while it has snapshots or is being copied; finished after a restart.
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct DeleteVolumeContext {
  FlowOutcome outcome;
  std::string volume_id;
  std::string project;
  std::string pool;
  std::string status_before;  // what mark_deleting found
  bool force = false;         // an admin's os-force_delete: any status but attached
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DeleteVolumeContext, outcome, volume_id, project, pool,
                                                status_before, force)

struct DeleteVolumeFlow {
  using Context = DeleteVolumeContext;
  static constexpr const char* kind = "delete_volume";
  static constexpr const char* answer_after = "mark_deleting";
  static constexpr OnRestart on_restart = OnRestart::resume;  // the user asked for it gone
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
