#include "controller/flows/delete_volume.hpp"

#include "controller/api/api_error.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = DeleteVolumeContext;

// Refuses the delete while a copy of the volume is being made.
void refuse_if_being_copied(FlowServices& s, const std::string& id) {
  for (const auto& other : s.store.all_volumes())
    if (other.source_volid == id && other.status == VolumeStatus::creating)
      conflict("Volume " + id + " is being copied into volume " + other.id + ".");
}

}  // namespace

std::vector<Task<Context>> DeleteVolumeFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Volume v = s.get_volume(c.project, c.volume_id);
    if (auto attachments = s.store.attachments_of(v.id); !attachments.empty())
      conflict("Volume " + v.id + " has " + std::to_string(attachments.size()) +
               " attachment(s) (e.g. " + attachments.front().id + "); delete them before the volume.");
    if (!c.force) require_transition("volume " + v.id, v.status, VolumeStatus::deleting);
    auto snaps = s.store.snapshots_of(v.id);
    if (!snaps.empty())
      bad_request("Volume " + v.id + " still has " + std::to_string(snaps.size()) + " dependent snapshot" +
                  (snaps.size() == 1 ? "" : "s") + ".");
    refuse_if_being_copied(s, v.id);
    c.pool = v.pool;
  }, {}});

  tasks.push_back(mark_deleting_task<Volume>(s, &Context::volume_id, [&s](const Context& c) {
    // A snapshot created between validate and here would lose its volume. Snapshot creation
    // checks the volume after inserting its row, and this checks the snapshots after marking
    // the volume, so of two racing requests at least one sees the other and is refused.
    if (!s.store.snapshots_of(c.volume_id).empty())
      bad_request("Volume " + c.volume_id + " gained a snapshot while being deleted.");
    // Likewise a copy of it that started after validate (see create's create_db_entry).
    refuse_if_being_copied(s, c.volume_id);
    // A forced delete passed the status check that keeps operations apart; any other operation
    // on the volume started before it marked the volume deleting, so the journal holds it now.
    if (c.force) s.refuse_while_busy("Volume " + c.volume_id, {c.volume_id}, 1);
  }));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"delete_on_pool", [&s](Context& c) {
    if (!c.pool.empty()) s.pool(c.pool).delete_volume(c.volume_id);
  }, {}});
  tasks.push_back({"release_quota", [&s](Context& c) { s.store.release_quota(c.volume_id); }, {}});
  tasks.push_back({"destroy_db_entry", [&s](Context& c) { s.store.delete_volume(c.volume_id); }, {}});
  return tasks;
}

}  // namespace volgate::controller
