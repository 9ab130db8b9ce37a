#pragma once
// Deleting a snapshot: refused while a volume is being made from it; finished after a restart.
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct DeleteSnapshotContext {
  FlowOutcome outcome;
  std::string snapshot_id;
  std::string project;
  std::string pool;
  std::string status_before;  // what mark_deleting found
  bool force = false;         // an admin's os-force_delete: any status
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DeleteSnapshotContext, outcome, snapshot_id, project, pool,
                                                status_before, force)

struct DeleteSnapshotFlow {
  using Context = DeleteSnapshotContext;
  static constexpr const char* kind = "delete_snapshot";
  static constexpr const char* answer_after = "mark_deleting";
  static constexpr OnRestart on_restart = OnRestart::resume;  // the user asked for it gone
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
