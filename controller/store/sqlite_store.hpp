#pragma once
// The Store on SQLite: one database file, WAL journal (readers never wait for the writer), a
// busy timeout so two processes sharing the file wait for each other instead of failing, and
// schema migrations recorded in a schema_version table.
#include <mutex>
#include <string>

#include "controller/store/store.hpp"

struct sqlite3;

namespace volgate::controller {

class SqliteStore final : public Store {
 public:
  // Every schema version this build knows; a database is migrated up to it when opened.
  static int latest_schema_version();

  // Opens (creating if needed) and migrates the database at `path` (":memory:" works too).
  // `migrate_to` stops at an older version (for migration tests). Throws std::runtime_error
  // naming the path, and refuses a database newer than this build.
  explicit SqliteStore(const std::string& path, int migrate_to = latest_schema_version());
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  int schema_version();
  std::string journal_mode();

  void insert_volume(const Volume& volume) override;
  std::optional<Volume> find_volume(const std::string& id) override;
  std::vector<Volume> list_volumes(const std::string& project) override;
  std::vector<Volume> all_volumes() override;
  Volume update_volume(const std::string& id, const std::function<void(Volume&)>& change) override;
  void delete_volume(const std::string& id) override;

  void insert_snapshot(const Snapshot& snapshot) override;
  std::optional<Snapshot> find_snapshot(const std::string& id) override;
  std::vector<Snapshot> list_snapshots(const std::string& project) override;
  std::vector<Snapshot> all_snapshots() override;
  std::vector<Snapshot> snapshots_of(const std::string& volume_id) override;
  Snapshot update_snapshot(const std::string& id, const std::function<void(Snapshot&)>& change) override;
  void delete_snapshot(const std::string& id) override;

  void insert_backup(const Backup& backup) override;
  std::optional<Backup> find_backup(const std::string& id) override;
  std::vector<Backup> list_backups(const std::string& project) override;
  std::vector<Backup> all_backups() override;
  Backup update_backup(const std::string& id, const std::function<void(Backup&)>& change) override;
  void delete_backup(const std::string& id) override;

  std::optional<Attachment> find_attachment(const std::string& id) override;
  std::vector<Attachment> list_attachments(const std::string& project) override;
  std::vector<Attachment> all_attachments() override;
  std::vector<Attachment> attachments_of(const std::string& volume_id) override;
  VolumeAttachments update_volume_attachments(const std::string& volume_id,
                                              const std::function<void(VolumeAttachments&)>& change) override;

  void insert_mapping(const BlockDeviceMapping& mapping) override;
  std::optional<BlockDeviceMapping> find_mapping(const std::string& server_id, const std::string& volume_id) override;
  std::vector<BlockDeviceMapping> mappings_of_server(const std::string& server_id) override;
  std::vector<BlockDeviceMapping> all_mappings() override;
  BlockDeviceMapping update_mapping(const std::string& id,
                                    const std::function<void(BlockDeviceMapping&)>& change) override;
  void delete_mapping(const std::string& id) override;

  void insert_action(const InstanceAction& action) override;
  std::optional<InstanceAction> find_action(const std::string& request_id) override;
  std::vector<InstanceAction> actions_of_server(const std::string& server_id) override;
  void update_action(const std::string& request_id, const std::function<void(InstanceAction&)>& change) override;

  void reserve_quota(const std::string& reservation, const std::string& project,
                     const QuotaDeltas& deltas, const QuotaDeltas& defaults) override;
  void rollback_quota(const std::string& reservation) override;
  void commit_quota(const std::string& reservation, const std::string& holder) override;
  void uncommit_quota(const std::string& reservation) override;
  void release_quota(const std::string& holder) override;
  QuotaUsage quota_usage(const std::string& project, const QuotaDeltas& defaults) override;
  void set_quota_limit(const std::string& project, const std::string& resource, int64_t limit) override;

  void journal_write(const FlowRecord& record) override;
  void journal_remove(const std::string& flow_id) override;
  std::vector<FlowRecord> journal_unfinished() override;

 private:
  class Statement;
  class Transaction;

  void exec(const char* sql);
  void migrate(int target);
  QuotaUsage usage_locked(const std::string& project, const QuotaDeltas& defaults);
  std::optional<Volume> find_volume_locked(const std::string& id);
  std::optional<Snapshot> find_snapshot_locked(const std::string& id);
  void write_volume_locked(const Volume& volume, bool insert);
  void read_metadata_locked(Volume& volume);
  // Attachments matching `where` (" WHERE col = ?" bound to `value`, or empty for all).
  std::vector<Attachment> select_attachments_locked(const char* where, const std::string& value);
  std::vector<BlockDeviceMapping> select_mappings_locked(const char* where, const std::string& a,
                                                        const std::string& b = {});
  void write_mapping_locked(const BlockDeviceMapping& mapping, bool insert);
  std::vector<InstanceAction> select_actions_locked(const char* where, const std::string& value);
  void write_action_locked(const InstanceAction& action, bool insert);
  void write_snapshot_locked(const Snapshot& snapshot, bool insert);
  void write_backup_locked(const Backup& backup, bool insert);
  std::vector<Backup> select_backups_locked(const char* where, const std::string& value);

  const std::string path_;
  sqlite3* db_ = nullptr;
  // One connection shared by the API and the flow workers; SQLite serialises on it anyway.
  std::recursive_mutex mutex_;
};

}  // namespace volgate::controller
