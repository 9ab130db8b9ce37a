#include "controller/flows/create_backup.hpp"

#include <spdlog/spdlog.h>

#include "controller/api/api_error.hpp"
#include "controller/backup/volume_backup.hpp"
#include "controller/domain/timestamp.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = CreateBackupContext;

// The volume's newest available backup: what an incremental is compared with.
std::optional<Backup> newest_backup(FlowServices& s, const Context& c) {
  std::optional<Backup> newest;
  for (const auto& b : s.store.list_backups(c.project))
    if (b.volume_id == c.volume_id && b.status == BackupStatus::available &&
        (!newest || b.data_timestamp > newest->data_timestamp))
      newest = b;
  return newest;
}

void validate(FlowServices& s, Context& c) {
  Volume v = s.get_volume(c.project, c.volume_id);
  const bool in_use = v.status == VolumeStatus::in_use;
  if (v.status != VolumeStatus::available && !(in_use && c.force))
    bad_request("Volume " + v.id + " is " + std::string(to_string(v.status)) +
                "; a backup needs it available (or in-use with force).");
  if (v.pool.empty() || !s.has_pool(v.pool)) bad_request("Volume " + v.id + " is in no configured pool.");
  if (v.encrypted && !s.key_wrap) bad_request("Encrypted volumes need the controller's master key file.");
  if (c.incremental) {
    auto parent = newest_backup(s, c);
    if (!parent) bad_request("Volume " + v.id + " has no available backup to make an incremental one from.");
    c.parent_id = parent->id;
  }
  c.size_gb = v.size_gb;
  c.pool = v.pool;
  // Named now, so that the journal knows it before the snapshot exists.
  if (s.pool(v.pool).keeps_backup_snapshots())
    c.backup_snapshot = true;
  else if (in_use)
    c.temp_snapshot = new_uuid();
  s.backup_repository();  // a repository that cannot be opened fails the request, not the backup
}

void create_db_entry(FlowServices& s, Context& c) {
  Volume v = s.get_volume(c.project, c.volume_id);
  Backup b;
  b.id = c.backup_id;
  b.project = c.project;
  b.volume_id = c.volume_id;
  b.name = c.name;
  b.description = c.description;
  b.size_gb = c.size_gb;
  b.parent_id = c.parent_id;
  b.availability_zone = v.availability_zone;
  b.volume_type = v.volume_type;
  b.encrypted = v.encrypted;
  if (v.encrypted) b.wrapped_key = s.key_wrap->wrap(s.key_wrap->unwrap(v.wrapped_key, v.id), b.id);
  s.store.insert_backup(b);
  // The other half of delete's check: a parent being deleted since validate is no parent.
  if (!c.parent_id.empty()) {
    auto parent = s.store.find_backup(c.parent_id);
    if (!parent || parent->status != BackupStatus::available)
      bad_request("Backup " + c.parent_id + ", the newest of volume " + c.volume_id +
                  ", is being deleted; try the incremental again.");
  }
}

void mark_volume(FlowServices& s, Context& c) {
  s.store.update_volume(c.volume_id, [&](Volume& v) {
    if (c.marked_volume && v.status == VolumeStatus::backing_up) return;  // run again
    if (v.status == VolumeStatus::in_use && c.force && (!c.temp_snapshot.empty() || c.backup_snapshot))
      return;  // read through a snapshot
    if (v.status != VolumeStatus::available)
      conflict("Volume " + v.id + " is " + std::string(to_string(v.status)) + "; a backup needs it available.");
    v.status = VolumeStatus::backing_up;
    c.marked_volume = true;
    // An available volume read without a snapshot: the temporary one validate named is not needed.
    c.temp_snapshot.clear();
  });
}

void unmark_volume(FlowServices& s, const Context& c) {
  if (!c.marked_volume || !s.store.find_volume(c.volume_id)) return;
  s.store.update_volume(c.volume_id, [](Volume& v) {
    if (v.status == VolumeStatus::backing_up) v.status = VolumeStatus::available;
  });
}

std::unique_ptr<VolumeReader> open_reader(Pool& pool, const Context& c) {
  if (c.backup_snapshot) return pool.read_backup_snapshot(c.volume_id, c.backup_id, c.parent_id);
  return c.temp_snapshot.empty() ? pool.read_volume(c.volume_id) : pool.read_snapshot(c.temp_snapshot);
}

void copy(FlowServices& s, Context& c) {
  Pool& pool = s.pool(c.pool);
  auto reader = open_reader(pool, c);
  const std::string data_timestamp = utc_timestamp();
  BackupRepository& repository = s.backup_repository();
  // What the parent named, for the pieces the pool says did not change since its snapshot.
  std::optional<BackupManifest> parent;
  if (reader->changes_known()) {
    try {
      parent = repository.manifest(c.parent_id);
    } catch (const std::exception& e) {
      spdlog::warn("backup {}: reading all of volume {}: {}", c.backup_id, c.volume_id, e.what());
    }
  }
  auto writer = repository.begin(c.backup_id, c.parent_id, reader->size());
  const BackupTally tally = back_up_volume(*reader, *writer, s.progress_reporter(c.backup_id),
                                           pool.config().copy_bps_limit, parent ? &*parent : nullptr);
  writer->commit();
  s.store.update_backup(c.backup_id, [&](Backup& b) {
    b.object_count = tally.chunks;
    b.stored_bytes = tally.stored_bytes;
    b.data_timestamp = data_timestamp;
  });
  // Tests and operators count these: an incremental from a diff reads only the changed pieces.
  spdlog::info("backup {} of volume {}: read {} bytes, {} chunks with data ({} unchanged since backup {}, unread), "
               "stored {} new bytes",
               c.backup_id, c.volume_id, tally.read_bytes, tally.chunks, tally.reused_chunks,
               parent ? c.parent_id : std::string("-"), tally.stored_bytes);
}

// Keeps the volume's snapshot of its newest finished backup (this one, unless a backup of the
// in-use volume that started later finished first) and drops those of its other finished
// backups (see the header); a backup still being made keeps its own. Run before this backup
// shows available, so that whoever sees it available sees the snapshots as they stay.
void drop_older_backup_snapshots(FlowServices& s, const Context& c) {
  Pool& pool = s.pool(c.pool);
  std::string keep = c.backup_id;
  const auto self = s.store.find_backup(c.backup_id);
  if (auto newest = newest_backup(s, c); newest && self && newest->data_timestamp > self->data_timestamp)
    keep = newest->id;
  for (const auto& id : pool.backup_snapshots(c.volume_id)) {
    if (id == keep) continue;
    auto other = s.store.find_backup(id);
    if (other && other->status == BackupStatus::creating) continue;
    pool.delete_backup_snapshot(c.volume_id, id);
    spdlog::info("backup {}: dropped the snapshot of backup {} from volume {}", c.backup_id, id, c.volume_id);
  }
}

}  // namespace

std::vector<Task<Context>> CreateBackupFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) { validate(s, c); }, {}});

  tasks.push_back(reserve_quota_task<Context>(s, [](const Context& c) {
    return QuotaDeltas{{kQuotaBackups, 1}, {kQuotaBackupGigabytes, static_cast<int64_t>(c.size_gb)}};
  }));

  tasks.push_back({"create_db_entry", [&s](Context& c) { create_db_entry(s, c); }, [&s](Context& c) {
    if (!s.store.find_backup(c.backup_id)) return;
    if (!c.outcome.accepted) {
      s.store.delete_backup(c.backup_id);  // the caller got an error, never this id
      return;
    }
    s.store.update_backup(c.backup_id, [&](Backup& b) {
      b.status = BackupStatus::error;
      b.error_message = c.outcome.error;
    });
  }});

  tasks.push_back({"mark_volume", [&s](Context& c) { mark_volume(s, c); },
                   [&s](Context& c) { unmark_volume(s, c); }});

  tasks.push_back(commit_quota_task(s, &Context::backup_id));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"take_snapshot", [&s](Context& c) {
    if (c.backup_snapshot) return s.pool(c.pool).create_backup_snapshot(c.volume_id, c.backup_id);
    if (c.temp_snapshot.empty()) return;
    s.pool(c.pool).create_snapshot(c.temp_snapshot, c.volume_id, [&s](uint64_t, uint64_t) {
      if (s.stopping) throw Cancelled();
    });
  }, [&s](Context& c) {
    if (!s.has_pool(c.pool)) return;
    if (c.backup_snapshot) s.pool(c.pool).delete_backup_snapshot(c.volume_id, c.backup_id);
    if (!c.temp_snapshot.empty()) s.pool(c.pool).delete_snapshot(c.temp_snapshot);
  }});

  tasks.push_back({"copy", [&s](Context& c) { copy(s, c); }, [&s](Context& c) {
    s.clear_progress(c.backup_id);
    // Its manifest if it got that far, and every chunk no other backup names.
    s.backup_repository().remove(c.backup_id);
  }});

  tasks.push_back({"finish", [&s](Context& c) {
    if (!c.temp_snapshot.empty() && s.has_pool(c.pool)) s.pool(c.pool).delete_snapshot(c.temp_snapshot);
    // Not worth failing the backup over: a snapshot left costs space, not data.
    if (c.backup_snapshot && s.has_pool(c.pool)) {
      try {
        drop_older_backup_snapshots(s, c);
      } catch (const std::exception& e) {
        spdlog::warn("backup {}: older backup snapshots of volume {} stay: {}", c.backup_id, c.volume_id, e.what());
      }
    }
    unmark_volume(s, c);
    s.store.update_backup(c.backup_id, [&](Backup& b) {
      if (b.status == BackupStatus::creating) b.status = BackupStatus::available;
      b.error_message.clear();
    });
    s.clear_progress(c.backup_id);
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
