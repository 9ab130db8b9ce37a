#include "controller/flows/create_snapshot.hpp"

#include "controller/api/api_error.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = CreateSnapshotContext;

}  // namespace

std::vector<Task<Context>> CreateSnapshotFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Volume v = s.get_volume(c.project, c.volume_id);
    const bool in_use_ok = c.force && v.status == VolumeStatus::in_use;
    if (v.status != VolumeStatus::available && !in_use_ok)
      bad_request("Volume " + v.id + " is " + std::string(to_string(v.status)) +
                  "; a snapshot needs it available (or in-use with force).");
    c.size_gb = v.size_gb;
    c.pool = v.pool;
  }, {}});

  tasks.push_back(reserve_quota_task<Context>(s, [](const Context& c) {
    return QuotaDeltas{{kQuotaSnapshots, 1}, {kQuotaGigabytes, static_cast<int64_t>(c.size_gb)}};
  }));

  tasks.push_back({"create_db_entry", [&s](Context& c) {
    Snapshot snap;
    snap.id = c.snapshot_id;
    snap.project = c.project;
    snap.volume_id = c.volume_id;
    snap.name = c.name;
    snap.description = c.description;
    snap.size_gb = c.size_gb;
    snap.pool = c.pool;
    s.store.insert_snapshot(snap);
    // The other half of the check in delete's mark_deleting: a volume being deleted (or gone)
    // since validate takes no snapshot.
    auto v = s.store.find_volume(snap.volume_id);
    if (!v || v->status == VolumeStatus::deleting || v->status == VolumeStatus::error_deleting)
      bad_request("Volume " + snap.volume_id + " is being deleted; it takes no snapshot.");
    // And of the restore's mark: a volume being overwritten from a backup since validate.
    if (v->status == VolumeStatus::restoring_backup)
      bad_request("Volume " + snap.volume_id + " is being restored from a backup; it takes no snapshot now.");
  }, [&s](Context& c) {
    if (!s.store.find_snapshot(c.snapshot_id)) return;
    if (!c.outcome.accepted) {
      s.store.delete_snapshot(c.snapshot_id);
      return;
    }
    s.store.update_snapshot(c.snapshot_id, [&](Snapshot& snap) {
      snap.status = SnapshotStatus::error;
      snap.error_message = c.outcome.error;
    });
  }});

  tasks.push_back(commit_quota_task(s, &Context::snapshot_id));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"create_on_pool", [&s](Context& c) {
    // A file pool's snapshot is a full copy: the controller's stop must be able to cut it short.
    s.pool(c.pool).create_snapshot(c.snapshot_id, c.volume_id, [&s](uint64_t, uint64_t) {
      if (s.stopping) throw Cancelled();
    });
  }, [&s](Context& c) {
    if (s.has_pool(c.pool)) s.pool(c.pool).delete_snapshot(c.snapshot_id);
  }});

  tasks.push_back({"finish", [&s](Context& c) {
    s.store.update_snapshot(c.snapshot_id, [&](Snapshot& snap) {
      if (snap.status != SnapshotStatus::creating) return;  // run again by recovery: already done
      require_transition("snapshot " + c.snapshot_id, snap.status, SnapshotStatus::available);
      snap.status = SnapshotStatus::available;
    });
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
