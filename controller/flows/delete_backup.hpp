#pragma once
// Deleting a backup: its record, its manifest, and the chunks no other backup uses. A backup
// that incrementals were made from stays until they are deleted (as Cinder refuses it).
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct DeleteBackupContext {
  FlowOutcome outcome;
  std::string backup_id;
  std::string project;
  bool force = false;  // an admin's os-force_delete: any status, unless a flow works on it
  std::string status_before;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DeleteBackupContext, outcome, backup_id, project, force, status_before)

struct DeleteBackupFlow {
  using Context = DeleteBackupContext;
  static constexpr const char* kind = "delete_backup";
  static constexpr const char* answer_after = "mark_deleting";
  // What the user asked for is finished after a restart.
  static constexpr OnRestart on_restart = OnRestart::resume;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
