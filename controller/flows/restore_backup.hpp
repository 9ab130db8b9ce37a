#pragma once
// Restoring a backup: into a new volume (made for it, of the backup's size, type and zone), or
// over an existing available volume at least as large. Every chunk is checked before it is
// written; a failure deletes a new volume and leaves an existing one in `error`, never holding
// silently wrong data. An encrypted backup's volume opens with the backup's key.
#include <cstdint>
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct RestoreBackupContext {
  FlowOutcome outcome;
  std::string backup_id;
  std::string project;
  std::string volume_id;  // the target: given, or made by validate for a new volume
  std::string name;       // of a new volume
  bool new_volume = false;
  // A new volume asked for with POST /volumes and backup_id: size_gb, volume_type and
  // availability_zone are the request's where given (validate checks them), and it has a
  // description and metadata.
  bool requested = false;
  std::string description;
  Metadata metadata;
  // Found by the tasks (or requested, above).
  uint64_t size_gb = 0;  // of a new volume
  std::string volume_type;
  std::string availability_zone;
  std::string pool;
  bool marked = false;  // this flow made the backup restoring (and an existing target restoring-backup)
  std::string reservation;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RestoreBackupContext, outcome, backup_id, project, volume_id, name,
                                                new_volume, requested, description, metadata, size_gb, volume_type, availability_zone, pool, marked,
                                                reservation)

struct RestoreBackupFlow {
  using Context = RestoreBackupContext;
  static constexpr const char* kind = "restore_backup";
  static constexpr const char* answer_after = "commit_quota";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
