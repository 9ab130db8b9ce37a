#include "controller/flows/delete_backup.hpp"

#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

using Context = DeleteBackupContext;

// Backups made against this one: an incremental's parent stays while they do.
void refuse_with_children(FlowServices& s, const Context& c) {
  for (const auto& b : s.store.list_backups(c.project))
    if (b.parent_id == c.backup_id)
      bad_request("Backup " + c.backup_id + " has incremental backups made from it (" + b.id +
                  "); delete those first.");
}

}  // namespace

std::vector<Task<Context>> DeleteBackupFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Backup b = s.get_backup(c.project, c.backup_id);
    if (!c.force && b.status != BackupStatus::available && b.status != BackupStatus::error)
      bad_request("Backup " + b.id + " is " + std::string(to_string(b.status)) +
                  "; it must be available or error to be deleted.");
    refuse_with_children(s, c);
  }, {}});

  tasks.push_back({"mark_deleting", [&s](Context& c) {
    s.store.update_backup(c.backup_id, [&](Backup& b) {
      if (b.status == BackupStatus::deleting && c.outcome.accepted) return;  // resumed after a restart
      if (!c.force && b.status != BackupStatus::available && b.status != BackupStatus::error)
        conflict("Backup " + b.id + " is " + std::string(to_string(b.status)) + "; it cannot be deleted now.");
      c.status_before = std::string(to_string(b.status));
      b.status = BackupStatus::deleting;
    });
    // The other half of create's check: an incremental that raced past validate keeps its parent.
    refuse_with_children(s, c);
    // A forced delete skipped the status check that keeps operations apart: the journal tells
    // whether one still works on the backup (this flow is one).
    if (c.force) s.refuse_while_backup_busy(c.backup_id, 1);
  }, [&s](Context& c) {
    if (!s.store.find_backup(c.backup_id)) return;
    s.store.update_backup(c.backup_id, [&](Backup& b) {
      if (b.status != BackupStatus::deleting) return;
      if (!c.outcome.accepted) {
        b.status = parse_backup_status(c.status_before).value_or(BackupStatus::error);
        return;
      }
      b.status = BackupStatus::error;
      b.error_message = "delete failed: " + c.outcome.error;
    });
  }});

  // ---- the caller has its answer; the rest runs in the background

  // Its snapshot on the volume, if the pool keeps one (create_backup.hpp): no incremental is
  // made against a deleted backup.
  tasks.push_back({"drop_snapshot", [&s](Context& c) {
    auto b = s.store.find_backup(c.backup_id);
    auto v = b ? s.store.find_volume(b->volume_id) : std::nullopt;
    if (v && !v->pool.empty() && s.has_pool(v->pool) && s.pool(v->pool).keeps_backup_snapshots())
      s.pool(v->pool).delete_backup_snapshot(v->id, c.backup_id);
  }, {}});

  tasks.push_back({"remove_data", [&s](Context& c) { s.backup_repository().remove(c.backup_id); }, {}});

  tasks.push_back({"delete_entry", [&s](Context& c) {
    s.store.delete_backup(c.backup_id);
    s.store.release_quota(c.backup_id);
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
