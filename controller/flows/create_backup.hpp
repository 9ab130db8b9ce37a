#pragma once
// Backing a volume up into the backup repository: an available volume is read as it is (and
// shows `backing-up` meanwhile); an in-use one (with force) through a temporary snapshot, so the
// guest keeps writing while a crash-consistent copy is read. An incremental backup names the
// volume's newest available backup as its parent and stores only the chunks that changed.
//
// On pools that keep backup snapshots (RBD) every backup is read from a snapshot of the volume
// named after it, and an incremental reads only what changed since its parent's snapshot. A
// volume keeps one such snapshot: its newest finished backup's, the one the next incremental is
// made against (as Cinder's Ceph backup driver does). When a backup finishes, the snapshots of
// the volume's other finished backups go; deleting a backup drops its snapshot; deleting the
// volume drops them all. An incremental whose parent's snapshot is gone (its child was deleted,
// so the parent is the newest again) reads the whole volume and compares hashes, as on files.
// A restore onto the volume needs nothing: Ceph's diff against the snapshot still says what
// differs from the snapshot, whatever wrote it.
#include <cstdint>
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct CreateBackupContext {
  FlowOutcome outcome;
  std::string backup_id;
  std::string project;
  std::string volume_id;
  std::string name;
  std::string description;
  bool incremental = false;
  bool force = false;
  // Found by the tasks.
  uint64_t size_gb = 0;
  std::string pool;
  std::string parent_id;
  std::string temp_snapshot;  // read instead of the volume when it is in use
  // The pool keeps a snapshot per backup (Pool::keeps_backup_snapshots): the backup reads its
  // own snapshot, in use or not, and leaves it for the next incremental.
  bool backup_snapshot = false;
  bool marked_volume = false;  // this flow made the volume backing-up
  std::string reservation;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CreateBackupContext, outcome, backup_id, project, volume_id, name,
                                                description, incremental, force, size_gb, pool, parent_id,
                                                temp_snapshot, backup_snapshot, marked_volume, reservation)

struct CreateBackupFlow {
  using Context = CreateBackupContext;
  static constexpr const char* kind = "create_backup";
  static constexpr const char* answer_after = "commit_quota";
  // A copy cut short is thrown away: the backup ends in error, the volume as it was.
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
