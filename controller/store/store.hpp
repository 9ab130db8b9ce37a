#pragma once
// Where the controller keeps its state. SqliteStore is the single-host implementation; the
// interface is what a PostgreSQL store for many hosts would fill.
//
// Every method is atomic. update_volume/update_snapshot read, change and write a row in one
// transaction, so a status check and the status change it guards cannot be split by another
// request.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "controller/store/flow_record.hpp"
#include "controller/domain/attachment.hpp"
#include "controller/domain/backup.hpp"
#include "controller/domain/block_device_mapping.hpp"
#include "controller/domain/instance_action.hpp"
#include "controller/domain/quota.hpp"
#include "controller/domain/snapshot.hpp"
#include "controller/domain/volume.hpp"

namespace volgate::controller {

class Store {
 public:
  virtual ~Store() = default;

  virtual void insert_volume(const Volume& volume) = 0;
  virtual std::optional<Volume> find_volume(const std::string& id) = 0;
  virtual std::vector<Volume> list_volumes(const std::string& project) = 0;
  // Volumes of every project, e.g. to add up what a pool has allocated.
  virtual std::vector<Volume> all_volumes() = 0;
  // Runs `change` on the current row inside a transaction and writes the result; `change` may
  // throw to leave the row untouched. Returns the row as written. Throws ApiError (not_found).
  virtual Volume update_volume(const std::string& id, const std::function<void(Volume&)>& change) = 0;
  virtual void delete_volume(const std::string& id) = 0;

  virtual void insert_snapshot(const Snapshot& snapshot) = 0;
  virtual std::optional<Snapshot> find_snapshot(const std::string& id) = 0;
  virtual std::vector<Snapshot> list_snapshots(const std::string& project) = 0;
  virtual std::vector<Snapshot> all_snapshots() = 0;  // of every project
  virtual std::vector<Snapshot> snapshots_of(const std::string& volume_id) = 0;
  virtual Snapshot update_snapshot(const std::string& id, const std::function<void(Snapshot&)>& change) = 0;
  virtual void delete_snapshot(const std::string& id) = 0;

  // Backups (their data is in the backup repository; these are their records).
  virtual void insert_backup(const Backup& backup) = 0;
  virtual std::optional<Backup> find_backup(const std::string& id) = 0;
  virtual std::vector<Backup> list_backups(const std::string& project) = 0;  // oldest first
  virtual std::vector<Backup> all_backups() = 0;                              // of every project
  // As update_volume. Throws ApiError (not_found).
  virtual Backup update_backup(const std::string& id, const std::function<void(Backup&)>& change) = 0;
  virtual void delete_backup(const std::string& id) = 0;

  // Attachments. They change together with their volume's status, so every change goes through
  // update_volume_attachments: it reads the volume and all its attachments, lets `change` edit,
  // add or remove attachments and edit the volume, and writes both in one transaction (`change`
  // may throw to leave everything as it was). Throws ApiError (not_found) for an unknown volume.
  struct VolumeAttachments {
    Volume volume;
    std::vector<Attachment> attachments;
  };
  virtual std::optional<Attachment> find_attachment(const std::string& id) = 0;
  virtual std::vector<Attachment> list_attachments(const std::string& project) = 0;
  virtual std::vector<Attachment> all_attachments() = 0;
  virtual std::vector<Attachment> attachments_of(const std::string& volume_id) = 0;
  virtual VolumeAttachments update_volume_attachments(const std::string& volume_id,
                                                      const std::function<void(VolumeAttachments&)>& change) = 0;

  // Block device mappings. insert_mapping refuses (ApiError conflict) a device name the server
  // already uses and a volume already mapped to it: the row is what reserves the name.
  virtual void insert_mapping(const BlockDeviceMapping& mapping) = 0;
  virtual std::optional<BlockDeviceMapping> find_mapping(const std::string& server_id,
                                                         const std::string& volume_id) = 0;
  virtual std::vector<BlockDeviceMapping> mappings_of_server(const std::string& server_id) = 0;
  virtual std::vector<BlockDeviceMapping> all_mappings() = 0;
  // Throws ApiError (not_found) when the mapping is gone.
  virtual BlockDeviceMapping update_mapping(const std::string& id,
                                            const std::function<void(BlockDeviceMapping&)>& change) = 0;
  virtual void delete_mapping(const std::string& id) = 0;

  // The servers' action logs. insert_action keeps an entry that is already there (a flow
  // resumed after a restart records its start again). Lists are newest first.
  virtual void insert_action(const InstanceAction& action) = 0;
  virtual std::optional<InstanceAction> find_action(const std::string& request_id) = 0;
  virtual std::vector<InstanceAction> actions_of_server(const std::string& server_id) = 0;
  // Throws ApiError (not_found) when there is no such entry.
  virtual void update_action(const std::string& request_id, const std::function<void(InstanceAction&)>& change) = 0;

  // Quotas (see quota.hpp). `defaults` are the limits of projects with no limit of their own.
  // reserve_quota throws QuotaExceeded naming the resource when a limit would be exceeded.
  virtual void reserve_quota(const std::string& reservation, const std::string& project,
                             const QuotaDeltas& deltas, const QuotaDeltas& defaults) = 0;
  virtual void rollback_quota(const std::string& reservation) = 0;
  virtual void commit_quota(const std::string& reservation, const std::string& holder) = 0;
  // Undoes commit_quota of this reservation (the holder keeps what other reservations gave it).
  virtual void uncommit_quota(const std::string& reservation) = 0;
  virtual void release_quota(const std::string& holder) = 0;
  virtual QuotaUsage quota_usage(const std::string& project, const QuotaDeltas& defaults) = 0;
  virtual void set_quota_limit(const std::string& project, const std::string& resource, int64_t limit) = 0;

  // The flow journal.
  virtual void journal_write(const FlowRecord& record) = 0;  // insert or replace
  virtual void journal_remove(const std::string& flow_id) = 0;
  virtual std::vector<FlowRecord> journal_unfinished() = 0;
};

}  // namespace volgate::controller
