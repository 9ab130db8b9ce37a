#include "controller/flows/delete_snapshot.hpp"

#include "controller/api/api_error.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = DeleteSnapshotContext;

// Refuses the delete while a volume is being made from the snapshot.
void refuse_if_being_copied(FlowServices& s, const std::string& id) {
  for (const auto& v : s.store.all_volumes())
    if (v.snapshot_id == id && v.status == VolumeStatus::creating)
      conflict("Snapshot " + id + " is being copied into volume " + v.id + ".");
}

}  // namespace

std::vector<Task<Context>> DeleteSnapshotFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Snapshot snap = s.get_snapshot(c.project, c.snapshot_id);
    if (!c.force) require_transition("snapshot " + snap.id, snap.status, SnapshotStatus::deleting);
    refuse_if_being_copied(s, snap.id);
    c.pool = snap.pool;
  }, {}});

  // A volume made from it that started after validate: one of the two is refused (see
  // create's create_db_entry). A forced delete also finds any other operation on the snapshot
  // in the journal (see delete_volume).
  tasks.push_back(mark_deleting_task<Snapshot>(s, &Context::snapshot_id, [&s](const Context& c) {
    refuse_if_being_copied(s, c.snapshot_id);
    if (c.force) s.refuse_while_busy("Snapshot " + c.snapshot_id, {c.snapshot_id}, 1);
  }));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"delete_on_pool", [&s](Context& c) {
    if (!c.pool.empty()) s.pool(c.pool).delete_snapshot(c.snapshot_id);
  }, {}});
  tasks.push_back({"release_quota", [&s](Context& c) { s.store.release_quota(c.snapshot_id); }, {}});
  tasks.push_back({"destroy_db_entry", [&s](Context& c) { s.store.delete_snapshot(c.snapshot_id); }, {}});
  return tasks;
}

}  // namespace volgate::controller
