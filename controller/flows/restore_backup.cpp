#include "controller/flows/restore_backup.hpp"

#include <spdlog/spdlog.h>

#include "controller/api/api_error.hpp"
#include "controller/backup/volume_backup.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = RestoreBackupContext;

// A copy (a clone, a snapshot) reads the volume as it is: a restore would write under it.
void refuse_if_being_copied(FlowServices& s, const std::string& id) {
  for (const auto& other : s.store.all_volumes())
    if (other.source_volid == id && other.status == VolumeStatus::creating)
      conflict("Volume " + id + " is being copied into volume " + other.id + "; restore when the copy is done.");
  for (const auto& snap : s.store.snapshots_of(id))
    if (snap.status == SnapshotStatus::creating)
      conflict("Volume " + id + " is being copied into snapshot " + snap.id + "; restore when it is done.");
}

void validate(FlowServices& s, Context& c) {
  Backup b = s.get_backup(c.project, c.backup_id);
  if (b.status != BackupStatus::available)
    bad_request("Backup " + b.id + " is " + std::string(to_string(b.status)) + "; it must be available to restore.");
  if (b.encrypted && !s.key_wrap) bad_request("Encrypted backups need the controller's master key file.");
  if (!c.new_volume) {
    Volume v = s.get_volume(c.project, c.volume_id);
    if (v.status != VolumeStatus::available)
      bad_request("Volume " + v.id + " is " + std::string(to_string(v.status)) + "; a restore needs it available.");
    if (v.size_gb < b.size_gb)
      bad_request("Volume " + v.id + " holds " + std::to_string(v.size_gb) + " GiB, less than the " +
                  std::to_string(b.size_gb) + " GiB of backup " + b.id + ".");
    if (v.encrypted != b.encrypted)
      bad_request(std::string("Backup ") + b.id + " is of " + (b.encrypted ? "an encrypted" : "a plain") +
                  " volume; restore it to a " + (b.encrypted ? "encrypted" : "plain") + " volume or a new one.");
    refuse_if_being_copied(s, v.id);
    // An encrypted volume's snapshots open with the volume's key; a restore brings the backup's
    // key, and theirs would be lost with the old one.
    if (v.encrypted)
      if (const auto snaps = s.store.snapshots_of(v.id); !snaps.empty())
        bad_request("Encrypted volume " + v.id + " has snapshots (e.g. " + snaps.front().id +
                    "), which open with its key; restore to a new volume, or delete them first.");
    c.pool = v.pool;
    return;
  }
  auto zone_known = [&s](const std::string& zone) {
    for (const auto& [name, p] : s.pools())
      if (p->config().availability_zone == zone) return true;
    return false;
  };
  if (c.requested && c.size_gb != 0 && c.size_gb < b.size_gb)
    bad_request("A volume of " + std::to_string(c.size_gb) + " GiB cannot hold backup " + b.id + " of " +
                std::to_string(b.size_gb) + " GiB.");
  if (c.size_gb == 0 || !c.requested) c.size_gb = b.size_gb;
  if (c.requested && !c.volume_type.empty()) {
    if (!s.config.volume_types.count(c.volume_type)) not_found("Volume type " + c.volume_type + " could not be found.");
    // Plain and encrypted data are never copied into each other.
    if (s.config.volume_types.at(c.volume_type).encrypted != b.encrypted)
      bad_request("Backup " + b.id + " is of " + (b.encrypted ? "an encrypted" : "a plain") + " volume; volume type " +
                  c.volume_type + " is " + (b.encrypted ? "not encrypted" : "encrypted") + ".");
  } else {
    c.volume_type = s.config.volume_types.count(b.volume_type) ? b.volume_type : s.config.default_volume_type;
  }
  if (c.requested && !c.availability_zone.empty()) {
    if (!zone_known(c.availability_zone)) bad_request("Availability zone '" + c.availability_zone + "' is invalid.");
  } else {
    c.availability_zone = zone_known(b.availability_zone) ? b.availability_zone : s.config.default_availability_zone;
  }
  if (c.name.empty() && !c.requested) c.name = "restore_backup_" + b.id;  // as Cinder names it
}

void create_target(FlowServices& s, Context& c) {
  if (!c.new_volume) return;
  Volume v;
  v.id = c.volume_id;
  v.project = c.project;
  v.name = c.name;
  v.description = c.description;
  v.metadata = c.metadata;
  v.size_gb = c.size_gb;
  v.status = VolumeStatus::restoring_backup;
  v.availability_zone = c.availability_zone;
  v.volume_type = c.volume_type;
  s.store.insert_volume(v);
}

void mark(FlowServices& s, Context& c) {
  s.store.update_backup(c.backup_id, [&](Backup& b) {
    if (c.marked && b.status == BackupStatus::restoring) return;
    if (b.status != BackupStatus::available)
      conflict("Backup " + b.id + " is " + std::string(to_string(b.status)) + "; it cannot be restored now.");
    b.status = BackupStatus::restoring;
    b.restore_volume_id = c.volume_id;
    // Only this flow's mark is undone by its revert: set in the same transaction.
    c.marked = true;
  });
  if (c.new_volume) return;
  bool volume_marked = false;
  try {
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      if (v.status == VolumeStatus::restoring_backup) return;
      if (v.status != VolumeStatus::available)
        conflict("Volume " + v.id + " is " + std::string(to_string(v.status)) + "; a restore needs it available.");
      v.status = VolumeStatus::restoring_backup;
    });
    volume_marked = true;
    // A copy that started between validate and the mark would still read the volume: each side
    // looks at the other's row after writing its own (a copy refuses a source restoring).
    refuse_if_being_copied(s, c.volume_id);
  } catch (...) {
    c.marked = false;  // the volume is not ours to put in error
    if (volume_marked)
      s.store.update_volume(c.volume_id, [](Volume& v) {
        if (v.status == VolumeStatus::restoring_backup) v.status = VolumeStatus::available;
      });
    s.store.update_backup(c.backup_id, [](Backup& b) {
      if (b.status == BackupStatus::restoring) b.status = BackupStatus::available;
      b.restore_volume_id.clear();
    });
    throw;
  }
}

void unmark(FlowServices& s, const Context& c) {
  if (!c.marked) return;
  if (s.store.find_backup(c.backup_id))
    s.store.update_backup(c.backup_id, [&](Backup& b) {
      if (b.status == BackupStatus::restoring) b.status = BackupStatus::available;
      b.restore_volume_id.clear();
      if (c.outcome.accepted) b.error_message = "restore to volume " + c.volume_id + " failed: " + c.outcome.error;
    });
  if (c.new_volume || !s.store.find_volume(c.volume_id)) return;
  s.store.update_volume(c.volume_id, [&](Volume& v) {
    if (v.status != VolumeStatus::restoring_backup) return;
    // Written in part, or not at all: only an untouched volume goes back to available.
    v.status = c.outcome.accepted ? VolumeStatus::error : VolumeStatus::available;
    if (c.outcome.accepted) v.error_message = "restore of backup " + c.backup_id + " failed: " + c.outcome.error;
  });
}

void schedule_and_create(FlowServices& s, Context& c) {
  if (!c.new_volume) return;
  if (c.pool.empty()) {
    ScheduleRequest request;
    request.size_gb = c.size_gb;
    request.availability_zone = c.availability_zone;
    request.extra_specs = s.config.volume_types.at(c.volume_type).extra_specs;
    auto b = s.store.find_backup(c.backup_id);
    if (b && b->encrypted) request.extra_specs["encryption_support"] = "true";
    c.pool = s.scheduler.choose(s.pool_states(), request);
    s.store.update_volume(c.volume_id, [&](Volume& v) { v.pool = c.pool; });
  }
  s.pool(c.pool).create_volume(c.volume_id, c.size_gb * kGiB);
}

void copy(FlowServices& s, Context& c) {
  BackupRepository& repository = s.backup_repository();
  const BackupManifest manifest = repository.manifest(c.backup_id);
  Pool& pool = s.pool(c.pool);
  auto target = pool.overwrite_volume(c.volume_id);
  restore_volume(repository, manifest, *target, s.progress_reporter(c.backup_id), pool.config().copy_bps_limit);
  spdlog::info("backup {}: restored to volume {} ({} chunks)", c.backup_id, c.volume_id, manifest.chunks.size());
}

// The target opens with the backup's key: its LUKS header came with the data.
void finish(FlowServices& s, Context& c) {
  const Backup b = *s.store.find_backup(c.backup_id);
  std::vector<uint8_t> wrapped;
  if (b.encrypted) wrapped = s.key_wrap->wrap(s.key_wrap->unwrap(b.wrapped_key, b.id), c.volume_id);
  s.store.update_volume(c.volume_id, [&](Volume& v) {
    v.encrypted = b.encrypted;
    v.wrapped_key = wrapped;
    if (v.status == VolumeStatus::restoring_backup) v.status = VolumeStatus::available;
    v.error_message.clear();
  });
  s.store.update_backup(c.backup_id, [](Backup& x) {
    if (x.status == BackupStatus::restoring) x.status = BackupStatus::available;
    x.restore_volume_id.clear();
    x.error_message.clear();
  });
  s.clear_progress(c.backup_id);
}

}  // namespace

std::vector<Task<Context>> RestoreBackupFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) { validate(s, c); }, {}});

  tasks.push_back(reserve_quota_task<Context>(s, [](const Context& c) {
    if (!c.new_volume) return QuotaDeltas{};
    return QuotaDeltas{{kQuotaVolumes, 1}, {kQuotaGigabytes, static_cast<int64_t>(c.size_gb)}};
  }));

  // A new volume that fails is deleted, not left in error: nobody asked for it but the restore.
  tasks.push_back({"create_target", [&s](Context& c) { create_target(s, c); }, [&s](Context& c) {
    if (c.new_volume && s.store.find_volume(c.volume_id)) s.store.delete_volume(c.volume_id);
  }});

  tasks.push_back({"mark_restoring", [&s](Context& c) { mark(s, c); }, [&s](Context& c) { unmark(s, c); }});

  tasks.push_back(commit_quota_task(s, &Context::volume_id));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"create_on_pool", [&s](Context& c) { schedule_and_create(s, c); }, [&s](Context& c) {
    if (c.new_volume && !c.pool.empty() && s.has_pool(c.pool)) s.pool(c.pool).delete_volume(c.volume_id);
  }});

  tasks.push_back({"copy", [&s](Context& c) { copy(s, c); }, [&s](Context& c) { s.clear_progress(c.backup_id); }});

  tasks.push_back({"finish", [&s](Context& c) { finish(s, c); }, {}});
  return tasks;
}

}  // namespace volgate::controller
