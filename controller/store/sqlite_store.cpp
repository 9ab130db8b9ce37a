#include "controller/store/sqlite_store.hpp"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <stdexcept>

#include "controller/api/api_error.hpp"
#include "controller/domain/timestamp.hpp"

namespace volgate::controller {
namespace {

// Each entry moves the schema one version up; entry i produces version i + 1. Never edit an
// entry that has shipped: add a new one.
const char* const kMigrations[] = {
    // 1: volumes, snapshots, quotas
    R"sql(
    CREATE TABLE volumes (
      id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
      size_gb INTEGER NOT NULL, status TEXT NOT NULL, availability_zone TEXT NOT NULL,
      volume_type TEXT NOT NULL, pool TEXT NOT NULL, snapshot_id TEXT NOT NULL,
      source_volid TEXT NOT NULL, image TEXT NOT NULL, encrypted INTEGER NOT NULL,
      wrapped_key BLOB, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX volumes_project ON volumes(project);
    CREATE TABLE snapshots (
      id TEXT PRIMARY KEY, project TEXT NOT NULL, volume_id TEXT NOT NULL, name TEXT NOT NULL,
      description TEXT NOT NULL, size_gb INTEGER NOT NULL, status TEXT NOT NULL,
      pool TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX snapshots_volume ON snapshots(volume_id);
    CREATE TABLE quota_limits (project TEXT NOT NULL, resource TEXT NOT NULL,
      hard_limit INTEGER NOT NULL, PRIMARY KEY (project, resource));
    CREATE TABLE quota_reservations (reservation TEXT NOT NULL, project TEXT NOT NULL,
      resource TEXT NOT NULL, amount INTEGER NOT NULL);
    CREATE INDEX quota_reservations_id ON quota_reservations(reservation);
    CREATE TABLE quota_holds (holder TEXT NOT NULL, reservation TEXT NOT NULL,
      project TEXT NOT NULL, resource TEXT NOT NULL, amount INTEGER NOT NULL);
    CREATE INDEX quota_holds_holder ON quota_holds(holder);
    )sql",
    // 2: why a flow failed, and the flow journal for crash recovery
    R"sql(
    ALTER TABLE volumes ADD COLUMN error_message TEXT NOT NULL DEFAULT '';
    ALTER TABLE snapshots ADD COLUMN error_message TEXT NOT NULL DEFAULT '';
    CREATE TABLE flow_journal (id TEXT PRIMARY KEY, kind TEXT NOT NULL,
      resource_id TEXT NOT NULL, phase TEXT NOT NULL, task INTEGER NOT NULL,
      context TEXT NOT NULL, started_at TEXT NOT NULL);
    )sql",
    // volume metadata (the user's key/value pairs)
    R"sql(
    CREATE TABLE volume_metadata (volume_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
      PRIMARY KEY (volume_id, key));
    )sql",
    // volume attachments (Cinder's v3 attachment API)
    R"sql(
    CREATE TABLE attachments (
      id TEXT PRIMARY KEY, project TEXT NOT NULL, volume_id TEXT NOT NULL,
      instance_uuid TEXT NOT NULL, status TEXT NOT NULL, read_only INTEGER NOT NULL,
      connector TEXT NOT NULL, host TEXT NOT NULL, export_name TEXT NOT NULL,
      attached_at TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX attachments_volume ON attachments(volume_id);
    CREATE INDEX attachments_project ON attachments(project);
    )sql",
    // block device mappings (Nova's BDMs): volumes attached to servers, with their device names
    R"sql(
    CREATE TABLE block_device_mappings (
      id TEXT PRIMARY KEY, project TEXT NOT NULL, server_id TEXT NOT NULL, volume_id TEXT NOT NULL,
      attachment_id TEXT NOT NULL, device TEXT NOT NULL, bus TEXT NOT NULL, tag TEXT NOT NULL,
      delete_on_termination INTEGER NOT NULL, connection_info TEXT NOT NULL, status TEXT NOT NULL,
      created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
      UNIQUE (server_id, device), UNIQUE (server_id, volume_id));
    )sql",
    // the servers' action logs (Nova's instance actions); the few events of an action as JSON
    R"sql(
    CREATE TABLE instance_actions (
      request_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, project TEXT NOT NULL,
      action TEXT NOT NULL, message TEXT NOT NULL, events TEXT NOT NULL,
      start_time TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX instance_actions_server ON instance_actions(server_id, start_time);
    )sql",
    // volume backups (their data is in the backup repository)
    R"sql(
    CREATE TABLE backups (
      id TEXT PRIMARY KEY, project TEXT NOT NULL, volume_id TEXT NOT NULL, name TEXT NOT NULL,
      description TEXT NOT NULL, size_gb INTEGER NOT NULL, status TEXT NOT NULL,
      parent_id TEXT NOT NULL, availability_zone TEXT NOT NULL, volume_type TEXT NOT NULL,
      encrypted INTEGER NOT NULL, wrapped_key BLOB, object_count INTEGER NOT NULL,
      stored_bytes INTEGER NOT NULL, data_timestamp TEXT NOT NULL, restore_volume_id TEXT NOT NULL,
      error_message TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX backups_project ON backups(project);
    )sql",
};

// Every row's times.
std::string utc_now() { return utc_timestamp(); }

}  // namespace

class SqliteStore::Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& text) {
    check(sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, int64_t value) {
    check(sqlite3_bind_int64(stmt_, i, value));
    return *this;
  }
  Statement& bind_blob(int i, const std::vector<uint8_t>& blob) {
    if (blob.empty())
      check(sqlite3_bind_null(stmt_, i));
    else
      check(sqlite3_bind_blob(stmt_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT));
    return *this;
  }
  // True while there is a row to read.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db_));
  }
  void run() {
    while (step()) {
    }
  }
  std::string text(int column) {
    auto* p = sqlite3_column_text(stmt_, column);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, column)) : std::string();
  }
  int64_t integer(int column) { return sqlite3_column_int64(stmt_, column); }
  std::vector<uint8_t> blob(int column) {
    auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, column));
    return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(stmt_, column)) : std::vector<uint8_t>();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE takes the write lock up front, so a read-check-write sequence inside cannot
// be overtaken by another process's writer; anything thrown inside rolls back.
class SqliteStore::Transaction {
 public:
  explicit Transaction(SqliteStore& store) : store_(store) { store_.exec("BEGIN IMMEDIATE"); }
  void commit() {
    store_.exec("COMMIT");
    done_ = true;
  }
  ~Transaction() {
    if (!done_) sqlite3_exec(store_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  SqliteStore& store_;
  bool done_ = false;
};

int SqliteStore::latest_schema_version() { return static_cast<int>(std::size(kMigrations)); }

SqliteStore::SqliteStore(const std::string& path, int migrate_to) : path_(path) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw std::runtime_error("database " + path + ": " + why);
  }
  try {
    sqlite3_busy_timeout(db_, 10000);
    exec("PRAGMA journal_mode=WAL");
    // NORMAL with WAL: a power cut may lose the last transactions but never corrupts the file;
    // the flow journal makes every flow safe to replay or revert from any committed point.
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
    migrate(migrate_to);
  } catch (const std::exception& e) {
    sqlite3_close(db_);
    throw std::runtime_error("database " + path + ": " + e.what());
  }
}

SqliteStore::~SqliteStore() { sqlite3_close(db_); }

void SqliteStore::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    throw std::runtime_error("sqlite: " + why);
  }
}

int SqliteStore::schema_version() {
  std::lock_guard lock(mutex_);
  Statement s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  s.step();
  return static_cast<int>(s.integer(0));
}

std::string SqliteStore::journal_mode() {
  std::lock_guard lock(mutex_);
  Statement s(db_, "PRAGMA journal_mode");
  s.step();
  return s.text(0);
}

void SqliteStore::migrate(int target) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
  int current;
  {
    Statement s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
    s.step();
    current = static_cast<int>(s.integer(0));
  }
  if (current > latest_schema_version())
    throw std::runtime_error("schema version " + std::to_string(current) + " is newer than this volgate knows (" +
                             std::to_string(latest_schema_version()) + ")");
  for (int v = current; v < target; ++v) {
    exec(kMigrations[v]);
    Statement(db_, "INSERT INTO schema_version VALUES (?, ?)").bind(1, int64_t{v + 1}).bind(2, utc_now()).run();
  }
  tx.commit();
}

// ------------------------------------------------------------------------------ volumes

namespace {
const char* const kVolumeColumns =
    "id, project, name, description, size_gb, status, availability_zone, volume_type, pool, "
    "snapshot_id, source_volid, image, encrypted, wrapped_key, created_at, updated_at, error_message";
}

void SqliteStore::write_volume_locked(const Volume& v, bool insert) {
  std::string sql = std::string(insert ? "INSERT" : "REPLACE") + " INTO volumes (" + kVolumeColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  Statement s(db_, sql.c_str());
  std::string now = utc_now();
  s.bind(1, v.id).bind(2, v.project).bind(3, v.name).bind(4, v.description);
  s.bind(5, static_cast<int64_t>(v.size_gb)).bind(6, std::string(to_string(v.status)));
  s.bind(7, v.availability_zone).bind(8, v.volume_type).bind(9, v.pool).bind(10, v.snapshot_id);
  s.bind(11, v.source_volid).bind(12, v.image).bind(13, int64_t{v.encrypted}).bind_blob(14, v.wrapped_key);
  s.bind(15, v.created_at.empty() ? now : v.created_at).bind(16, now).bind(17, v.error_message);
  s.run();
  // The metadata is part of the row: written whole with it, inside the caller's transaction.
  Statement(db_, "DELETE FROM volume_metadata WHERE volume_id = ?").bind(1, v.id).run();
  for (const auto& [key, value] : v.metadata)
    Statement(db_, "INSERT INTO volume_metadata VALUES (?, ?, ?)").bind(1, v.id).bind(2, key).bind(3, value).run();
}

void SqliteStore::read_metadata_locked(Volume& v) {
  Statement s(db_, "SELECT key, value FROM volume_metadata WHERE volume_id = ?");
  s.bind(1, v.id);
  while (s.step()) v.metadata[s.text(0)] = s.text(1);
}

namespace {
Volume read_volume(auto& s) {
  Volume v;
  v.id = s.text(0);
  v.project = s.text(1);
  v.name = s.text(2);
  v.description = s.text(3);
  v.size_gb = static_cast<uint64_t>(s.integer(4));
  v.status = parse_volume_status(s.text(5)).value_or(VolumeStatus::error);
  v.availability_zone = s.text(6);
  v.volume_type = s.text(7);
  v.pool = s.text(8);
  v.snapshot_id = s.text(9);
  v.source_volid = s.text(10);
  v.image = s.text(11);
  v.encrypted = s.integer(12) != 0;
  v.wrapped_key = s.blob(13);
  v.created_at = s.text(14);
  v.updated_at = s.text(15);
  v.error_message = s.text(16);
  return v;
}
}  // namespace

void SqliteStore::insert_volume(const Volume& volume) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  write_volume_locked(volume, true);
  tx.commit();
}

std::optional<Volume> SqliteStore::find_volume_locked(const std::string& id) {
  std::string sql = std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE id = ?";
  Statement s(db_, sql.c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  Volume v = read_volume(s);
  read_metadata_locked(v);
  return v;
}

std::optional<Volume> SqliteStore::find_volume(const std::string& id) {
  std::lock_guard lock(mutex_);
  return find_volume_locked(id);
}

std::vector<Volume> SqliteStore::list_volumes(const std::string& project) {
  std::lock_guard lock(mutex_);
  std::string sql = std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE project = ? ORDER BY created_at";
  Statement s(db_, sql.c_str());
  s.bind(1, project);
  std::vector<Volume> out;
  while (s.step()) out.push_back(read_volume(s));
  for (Volume& v : out) read_metadata_locked(v);
  return out;
}

std::vector<Volume> SqliteStore::all_volumes() {
  std::lock_guard lock(mutex_);
  std::string sql = std::string("SELECT ") + kVolumeColumns + " FROM volumes ORDER BY created_at";
  Statement s(db_, sql.c_str());
  std::vector<Volume> out;
  while (s.step()) out.push_back(read_volume(s));
  for (Volume& v : out) read_metadata_locked(v);
  return out;
}

Volume SqliteStore::update_volume(const std::string& id, const std::function<void(Volume&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto volume = find_volume_locked(id);
  if (!volume) not_found("Volume " + id + " could not be found.");
  change(*volume);
  write_volume_locked(*volume, false);
  tx.commit();
  return *find_volume_locked(id);
}

void SqliteStore::delete_volume(const std::string& id) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  Statement(db_, "DELETE FROM volume_metadata WHERE volume_id = ?").bind(1, id).run();
  Statement(db_, "DELETE FROM volumes WHERE id = ?").bind(1, id).run();
  tx.commit();
}

// ------------------------------------------------------------------------------ snapshots

namespace {
const char* const kSnapshotColumns =
    "id, project, volume_id, name, description, size_gb, status, pool, created_at, updated_at, error_message";

Snapshot read_snapshot(auto& s) {
  Snapshot n;
  n.id = s.text(0);
  n.project = s.text(1);
  n.volume_id = s.text(2);
  n.name = s.text(3);
  n.description = s.text(4);
  n.size_gb = static_cast<uint64_t>(s.integer(5));
  n.status = parse_snapshot_status(s.text(6)).value_or(SnapshotStatus::error);
  n.pool = s.text(7);
  n.created_at = s.text(8);
  n.updated_at = s.text(9);
  n.error_message = s.text(10);
  return n;
}
}  // namespace

void SqliteStore::write_snapshot_locked(const Snapshot& n, bool insert) {
  std::string sql = std::string(insert ? "INSERT" : "REPLACE") + " INTO snapshots (" + kSnapshotColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?)";
  Statement s(db_, sql.c_str());
  std::string now = utc_now();
  s.bind(1, n.id).bind(2, n.project).bind(3, n.volume_id).bind(4, n.name).bind(5, n.description);
  s.bind(6, static_cast<int64_t>(n.size_gb)).bind(7, std::string(to_string(n.status))).bind(8, n.pool);
  s.bind(9, n.created_at.empty() ? now : n.created_at).bind(10, now).bind(11, n.error_message);
  s.run();
}

void SqliteStore::insert_snapshot(const Snapshot& snapshot) {
  std::lock_guard lock(mutex_);
  write_snapshot_locked(snapshot, true);
}

std::optional<Snapshot> SqliteStore::find_snapshot_locked(const std::string& id) {
  std::string sql = std::string("SELECT ") + kSnapshotColumns + " FROM snapshots WHERE id = ?";
  Statement s(db_, sql.c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_snapshot(s);
}

std::optional<Snapshot> SqliteStore::find_snapshot(const std::string& id) {
  std::lock_guard lock(mutex_);
  return find_snapshot_locked(id);
}

std::vector<Snapshot> SqliteStore::list_snapshots(const std::string& project) {
  std::lock_guard lock(mutex_);
  std::string sql = std::string("SELECT ") + kSnapshotColumns + " FROM snapshots WHERE project = ? ORDER BY created_at";
  Statement s(db_, sql.c_str());
  s.bind(1, project);
  std::vector<Snapshot> out;
  while (s.step()) out.push_back(read_snapshot(s));
  return out;
}

std::vector<Snapshot> SqliteStore::all_snapshots() {
  std::lock_guard lock(mutex_);
  std::string sql = std::string("SELECT ") + kSnapshotColumns + " FROM snapshots ORDER BY created_at";
  Statement s(db_, sql.c_str());
  std::vector<Snapshot> out;
  while (s.step()) out.push_back(read_snapshot(s));
  return out;
}

std::vector<Snapshot> SqliteStore::snapshots_of(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  std::string sql = std::string("SELECT ") + kSnapshotColumns + " FROM snapshots WHERE volume_id = ? ORDER BY created_at";
  Statement s(db_, sql.c_str());
  s.bind(1, volume_id);
  std::vector<Snapshot> out;
  while (s.step()) out.push_back(read_snapshot(s));
  return out;
}

Snapshot SqliteStore::update_snapshot(const std::string& id, const std::function<void(Snapshot&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto snapshot = find_snapshot_locked(id);
  if (!snapshot) not_found("Snapshot " + id + " could not be found.");
  change(*snapshot);
  write_snapshot_locked(*snapshot, false);
  tx.commit();
  return *find_snapshot_locked(id);
}

void SqliteStore::delete_snapshot(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM snapshots WHERE id = ?").bind(1, id).run();
}

// ------------------------------------------------------------------------------ backups

namespace {
const char* const kBackupColumns =
    "id, project, volume_id, name, description, size_gb, status, parent_id, availability_zone, volume_type, "
    "encrypted, wrapped_key, object_count, stored_bytes, data_timestamp, restore_volume_id, error_message, "
    "created_at, updated_at";

Backup read_backup(auto& s) {
  Backup b;
  b.id = s.text(0);
  b.project = s.text(1);
  b.volume_id = s.text(2);
  b.name = s.text(3);
  b.description = s.text(4);
  b.size_gb = static_cast<uint64_t>(s.integer(5));
  b.status = parse_backup_status(s.text(6)).value_or(BackupStatus::error);
  b.parent_id = s.text(7);
  b.availability_zone = s.text(8);
  b.volume_type = s.text(9);
  b.encrypted = s.integer(10) != 0;
  b.wrapped_key = s.blob(11);
  b.object_count = static_cast<uint64_t>(s.integer(12));
  b.stored_bytes = static_cast<uint64_t>(s.integer(13));
  b.data_timestamp = s.text(14);
  b.restore_volume_id = s.text(15);
  b.error_message = s.text(16);
  b.created_at = s.text(17);
  b.updated_at = s.text(18);
  return b;
}
}  // namespace

void SqliteStore::write_backup_locked(const Backup& b, bool insert) {
  std::string sql = std::string(insert ? "INSERT" : "REPLACE") + " INTO backups (" + kBackupColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  Statement s(db_, sql.c_str());
  std::string now = utc_now();
  s.bind(1, b.id).bind(2, b.project).bind(3, b.volume_id).bind(4, b.name).bind(5, b.description);
  s.bind(6, static_cast<int64_t>(b.size_gb)).bind(7, std::string(to_string(b.status))).bind(8, b.parent_id);
  s.bind(9, b.availability_zone).bind(10, b.volume_type).bind(11, int64_t{b.encrypted ? 1 : 0});
  s.bind_blob(12, b.wrapped_key).bind(13, static_cast<int64_t>(b.object_count));
  s.bind(14, static_cast<int64_t>(b.stored_bytes)).bind(15, b.data_timestamp).bind(16, b.restore_volume_id);
  s.bind(17, b.error_message).bind(18, b.created_at.empty() ? now : b.created_at).bind(19, now);
  s.run();
}

std::vector<Backup> SqliteStore::select_backups_locked(const char* where, const std::string& value) {
  std::string sql = std::string("SELECT ") + kBackupColumns + " FROM backups" + where + " ORDER BY created_at, id";
  Statement s(db_, sql.c_str());
  if (*where) s.bind(1, value);
  std::vector<Backup> out;
  while (s.step()) out.push_back(read_backup(s));
  return out;
}

void SqliteStore::insert_backup(const Backup& backup) {
  std::lock_guard lock(mutex_);
  write_backup_locked(backup, true);
}

std::optional<Backup> SqliteStore::find_backup(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto found = select_backups_locked(" WHERE id = ?", id);
  if (found.empty()) return std::nullopt;
  return found.front();
}

std::vector<Backup> SqliteStore::list_backups(const std::string& project) {
  std::lock_guard lock(mutex_);
  return select_backups_locked(" WHERE project = ?", project);
}

std::vector<Backup> SqliteStore::all_backups() {
  std::lock_guard lock(mutex_);
  return select_backups_locked("", "");
}

Backup SqliteStore::update_backup(const std::string& id, const std::function<void(Backup&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto found = select_backups_locked(" WHERE id = ?", id);
  if (found.empty()) not_found("Backup " + id + " could not be found.");
  change(found.front());
  write_backup_locked(found.front(), false);
  tx.commit();
  return select_backups_locked(" WHERE id = ?", id).front();
}

void SqliteStore::delete_backup(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM backups WHERE id = ?").bind(1, id).run();
}

// ------------------------------------------------------------------------------ attachments

namespace {
const char* const kAttachmentColumns =
    "id, project, volume_id, instance_uuid, status, read_only, connector, host, export_name, attached_at, "
    "created_at, updated_at";

Attachment read_attachment(auto& s) {
  Attachment a;
  a.id = s.text(0);
  a.project = s.text(1);
  a.volume_id = s.text(2);
  a.instance_uuid = s.text(3);
  // A status this build does not know is one nothing may build on: detaching lets it go.
  a.status = parse_attachment_status(s.text(4)).value_or(AttachmentStatus::detaching);
  a.read_only = s.integer(5) != 0;
  a.connector = s.text(6);
  a.host = s.text(7);
  a.export_name = s.text(8);
  a.attached_at = s.text(9);
  a.created_at = s.text(10);
  a.updated_at = s.text(11);
  return a;
}
}  // namespace

std::vector<Attachment> SqliteStore::select_attachments_locked(const char* where, const std::string& value) {
  std::string sql = std::string("SELECT ") + kAttachmentColumns + " FROM attachments" + where + " ORDER BY created_at";
  Statement s(db_, sql.c_str());
  if (!value.empty()) s.bind(1, value);
  std::vector<Attachment> out;
  while (s.step()) out.push_back(read_attachment(s));
  return out;
}

std::optional<Attachment> SqliteStore::find_attachment(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto found = select_attachments_locked(" WHERE id = ?", id);
  if (found.empty()) return std::nullopt;
  return found.front();
}

std::vector<Attachment> SqliteStore::list_attachments(const std::string& project) {
  std::lock_guard lock(mutex_);
  return select_attachments_locked(" WHERE project = ?", project);
}

std::vector<Attachment> SqliteStore::all_attachments() {
  std::lock_guard lock(mutex_);
  return select_attachments_locked("", {});
}

std::vector<Attachment> SqliteStore::attachments_of(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  return select_attachments_locked(" WHERE volume_id = ?", volume_id);
}

Store::VolumeAttachments SqliteStore::update_volume_attachments(
    const std::string& volume_id, const std::function<void(VolumeAttachments&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto volume = find_volume_locked(volume_id);
  if (!volume) not_found("Volume " + volume_id + " could not be found.");
  VolumeAttachments state{*volume, select_attachments_locked(" WHERE volume_id = ?", volume_id)};
  change(state);
  write_volume_locked(state.volume, false);
  // The set is small (one per host and instance): written whole, like a volume's metadata.
  Statement(db_, "DELETE FROM attachments WHERE volume_id = ?").bind(1, volume_id).run();
  const std::string now = utc_now();
  for (const Attachment& a : state.attachments) {
    std::string sql = std::string("INSERT INTO attachments (") + kAttachmentColumns +
                      ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
    Statement s(db_, sql.c_str());
    s.bind(1, a.id).bind(2, a.project).bind(3, volume_id).bind(4, a.instance_uuid);
    s.bind(5, std::string(to_string(a.status))).bind(6, int64_t{a.read_only}).bind(7, a.connector);
    s.bind(8, a.host).bind(9, a.export_name).bind(10, a.attached_at);
    s.bind(11, a.created_at.empty() ? now : a.created_at).bind(12, now);
    s.run();
  }
  tx.commit();
  return {*find_volume_locked(volume_id), select_attachments_locked(" WHERE volume_id = ?", volume_id)};
}

// ------------------------------------------------------------------------------ block device mappings

namespace {
const char* const kMappingColumns =
    "id, project, server_id, volume_id, attachment_id, device, bus, tag, delete_on_termination, "
    "connection_info, status, created_at, updated_at";

BlockDeviceMapping read_mapping(auto& s) {
  BlockDeviceMapping m;
  m.id = s.text(0);
  m.project = s.text(1);
  m.server_id = s.text(2);
  m.volume_id = s.text(3);
  m.attachment_id = s.text(4);
  m.device = s.text(5);
  m.bus = s.text(6);
  m.tag = s.text(7);
  m.delete_on_termination = s.integer(8) != 0;
  m.connection_info = s.text(9);
  // A status this build does not know: detaching lets it go.
  m.status = parse_mapping_status(s.text(10)).value_or(MappingStatus::detaching);
  m.created_at = s.text(11);
  m.updated_at = s.text(12);
  return m;
}
}  // namespace

std::vector<BlockDeviceMapping> SqliteStore::select_mappings_locked(const char* where, const std::string& a,
                                                                     const std::string& b) {
  std::string sql = std::string("SELECT ") + kMappingColumns + " FROM block_device_mappings" + where +
                    " ORDER BY created_at";
  Statement s(db_, sql.c_str());
  if (!a.empty()) s.bind(1, a);
  if (!b.empty()) s.bind(2, b);
  std::vector<BlockDeviceMapping> out;
  while (s.step()) out.push_back(read_mapping(s));
  return out;
}

void SqliteStore::write_mapping_locked(const BlockDeviceMapping& m, bool insert) {
  std::string sql = std::string(insert ? "INSERT" : "REPLACE") + " INTO block_device_mappings (" + kMappingColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)";
  Statement s(db_, sql.c_str());
  const std::string now = utc_now();
  s.bind(1, m.id).bind(2, m.project).bind(3, m.server_id).bind(4, m.volume_id).bind(5, m.attachment_id);
  s.bind(6, m.device).bind(7, m.bus).bind(8, m.tag).bind(9, int64_t{m.delete_on_termination});
  s.bind(10, m.connection_info).bind(11, std::string(to_string(m.status)));
  s.bind(12, m.created_at.empty() ? now : m.created_at).bind(13, now);
  s.run();
}

void SqliteStore::insert_mapping(const BlockDeviceMapping& m) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  for (const auto& other : select_mappings_locked(" WHERE server_id = ?", m.server_id)) {
    if (other.volume_id == m.volume_id)
      conflict("Volume " + m.volume_id + " is already attached to server " + m.server_id + ".");
    if (other.device == m.device)
      conflict("Device " + m.device + " is already in use on server " + m.server_id + ".");
  }
  write_mapping_locked(m, true);
  tx.commit();
}

std::optional<BlockDeviceMapping> SqliteStore::find_mapping(const std::string& server_id,
                                                            const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  auto found = select_mappings_locked(" WHERE server_id = ? AND volume_id = ?", server_id, volume_id);
  if (found.empty()) return std::nullopt;
  return found.front();
}

std::vector<BlockDeviceMapping> SqliteStore::mappings_of_server(const std::string& server_id) {
  std::lock_guard lock(mutex_);
  return select_mappings_locked(" WHERE server_id = ?", server_id);
}

std::vector<BlockDeviceMapping> SqliteStore::all_mappings() {
  std::lock_guard lock(mutex_);
  return select_mappings_locked("", {});
}

BlockDeviceMapping SqliteStore::update_mapping(const std::string& id,
                                               const std::function<void(BlockDeviceMapping&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto found = select_mappings_locked(" WHERE id = ?", id);
  if (found.empty()) not_found("Block device mapping " + id + " could not be found.");
  change(found.front());
  write_mapping_locked(found.front(), false);
  tx.commit();
  return select_mappings_locked(" WHERE id = ?", id).front();
}

void SqliteStore::delete_mapping(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM block_device_mappings WHERE id = ?").bind(1, id).run();
}

// ------------------------------------------------------------------------------ instance actions

namespace {
const char* const kActionColumns = "request_id, server_id, project, action, message, events, start_time, updated_at";

nlohmann::json events_json(const std::vector<InstanceActionEvent>& events) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& e : events)
    list.push_back({{"event", e.event}, {"start_time", e.start_time}, {"finish_time", e.finish_time},
                    {"result", e.result}, {"details", e.details}});
  return list;
}

std::vector<InstanceActionEvent> events_from(const std::string& text) {
  std::vector<InstanceActionEvent> events;
  const auto list = nlohmann::json::parse(text, nullptr, false);
  if (!list.is_array()) return events;  // a damaged row shows without events rather than failing
  for (const auto& e : list) {
    if (!e.is_object()) continue;
    events.push_back({e.value("event", ""), e.value("start_time", ""), e.value("finish_time", ""),
                      e.value("result", ""), e.value("details", "")});
  }
  return events;
}
}  // namespace

std::vector<InstanceAction> SqliteStore::select_actions_locked(const char* where, const std::string& value) {
  std::string sql = std::string("SELECT ") + kActionColumns + " FROM instance_actions" + where +
                    " ORDER BY start_time DESC, rowid DESC";
  Statement s(db_, sql.c_str());
  s.bind(1, value);
  std::vector<InstanceAction> out;
  while (s.step()) {
    InstanceAction a{.request_id = s.text(0), .server_id = s.text(1), .project = s.text(2), .action = s.text(3),
                     .message = s.text(4), .start_time = s.text(6), .updated_at = s.text(7)};
    a.events = events_from(s.text(5));
    out.push_back(std::move(a));
  }
  return out;
}

void SqliteStore::write_action_locked(const InstanceAction& a, bool insert) {
  std::string sql = std::string(insert ? "INSERT OR IGNORE" : "REPLACE") + " INTO instance_actions (" +
                    kActionColumns + ") VALUES (?,?,?,?,?,?,?,?)";
  Statement s(db_, sql.c_str());
  const std::string now = utc_now();
  s.bind(1, a.request_id).bind(2, a.server_id).bind(3, a.project).bind(4, a.action).bind(5, a.message);
  s.bind(6, events_json(a.events).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  s.bind(7, a.start_time.empty() ? now : a.start_time).bind(8, now);
  s.run();
}

void SqliteStore::insert_action(const InstanceAction& action) {
  std::lock_guard lock(mutex_);
  write_action_locked(action, true);
}

std::optional<InstanceAction> SqliteStore::find_action(const std::string& request_id) {
  std::lock_guard lock(mutex_);
  auto found = select_actions_locked(" WHERE request_id = ?", request_id);
  if (found.empty()) return std::nullopt;
  return found.front();
}

std::vector<InstanceAction> SqliteStore::actions_of_server(const std::string& server_id) {
  std::lock_guard lock(mutex_);
  return select_actions_locked(" WHERE server_id = ?", server_id);
}

void SqliteStore::update_action(const std::string& request_id, const std::function<void(InstanceAction&)>& change) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  auto found = select_actions_locked(" WHERE request_id = ?", request_id);
  if (found.empty()) not_found("Action " + request_id + " could not be found.");
  change(found.front());
  write_action_locked(found.front(), false);
  tx.commit();
}

// ------------------------------------------------------------------------------ quotas

QuotaUsage SqliteStore::usage_locked(const std::string& project, const QuotaDeltas& defaults) {
  QuotaUsage usage;
  for (const auto& [resource, limit] : defaults) usage[resource].limit = limit;
  {
    Statement s(db_, "SELECT resource, hard_limit FROM quota_limits WHERE project = ?");
    s.bind(1, project);
    while (s.step()) usage[s.text(0)].limit = s.integer(1);
  }
  {
    Statement s(db_, "SELECT resource, SUM(amount) FROM quota_holds WHERE project = ? GROUP BY resource");
    s.bind(1, project);
    while (s.step()) usage[s.text(0)].in_use = s.integer(1);
  }
  {
    Statement s(db_, "SELECT resource, SUM(amount) FROM quota_reservations WHERE project = ? GROUP BY resource");
    s.bind(1, project);
    while (s.step()) usage[s.text(0)].reserved = s.integer(1);
  }
  return usage;
}

void SqliteStore::reserve_quota(const std::string& reservation, const std::string& project,
                                const QuotaDeltas& deltas, const QuotaDeltas& defaults) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  QuotaUsage usage = usage_locked(project, defaults);
  for (const auto& [resource, amount] : deltas) {
    const QuotaLine& line = usage[resource];
    if (amount > 0 && line.limit >= 0 && line.in_use + line.reserved + amount > line.limit)
      throw QuotaExceeded("Requested " + std::to_string(amount) + " " + resource + " exceeds the quota of project " +
                          project + ": limit " + std::to_string(line.limit) + ", in use " +
                          std::to_string(line.in_use) + ", reserved " + std::to_string(line.reserved) + ".");
  }
  for (const auto& [resource, amount] : deltas) {
    if (amount == 0) continue;
    Statement(db_, "INSERT INTO quota_reservations VALUES (?, ?, ?, ?)")
        .bind(1, reservation).bind(2, project).bind(3, resource).bind(4, amount).run();
  }
  tx.commit();
}

void SqliteStore::rollback_quota(const std::string& reservation) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM quota_reservations WHERE reservation = ?").bind(1, reservation).run();
}

void SqliteStore::commit_quota(const std::string& reservation, const std::string& holder) {
  std::lock_guard lock(mutex_);
  Transaction tx(*this);
  Statement(db_,
            "INSERT INTO quota_holds SELECT ?, reservation, project, resource, amount "
            "FROM quota_reservations WHERE reservation = ?")
      .bind(1, holder).bind(2, reservation).run();
  Statement(db_, "DELETE FROM quota_reservations WHERE reservation = ?").bind(1, reservation).run();
  tx.commit();
}

void SqliteStore::uncommit_quota(const std::string& reservation) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM quota_holds WHERE reservation = ?").bind(1, reservation).run();
}

void SqliteStore::release_quota(const std::string& holder) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM quota_holds WHERE holder = ?").bind(1, holder).run();
}

QuotaUsage SqliteStore::quota_usage(const std::string& project, const QuotaDeltas& defaults) {
  std::lock_guard lock(mutex_);
  return usage_locked(project, defaults);
}

void SqliteStore::set_quota_limit(const std::string& project, const std::string& resource, int64_t limit) {
  std::lock_guard lock(mutex_);
  Statement(db_, "REPLACE INTO quota_limits VALUES (?, ?, ?)").bind(1, project).bind(2, resource).bind(3, limit).run();
}

// ------------------------------------------------------------------------------ flow journal

void SqliteStore::journal_write(const FlowRecord& r) {
  std::lock_guard lock(mutex_);
  Statement(db_,
            "INSERT INTO flow_journal VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "phase = excluded.phase, task = excluded.task, context = excluded.context")
      .bind(1, r.id).bind(2, r.kind).bind(3, r.resource_id)
      .bind(4, std::string(r.phase == FlowRecord::Phase::running ? "running" : "reverting"))
      .bind(5, int64_t{r.task}).bind(6, r.context).bind(7, utc_now())
      .run();
}

void SqliteStore::journal_remove(const std::string& flow_id) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM flow_journal WHERE id = ?").bind(1, flow_id).run();
}

std::vector<FlowRecord> SqliteStore::journal_unfinished() {
  std::lock_guard lock(mutex_);
  Statement s(db_, "SELECT id, kind, resource_id, phase, task, context FROM flow_journal ORDER BY started_at");
  std::vector<FlowRecord> out;
  while (s.step()) {
    FlowRecord r;
    r.id = s.text(0);
    r.kind = s.text(1);
    r.resource_id = s.text(2);
    r.phase = s.text(3) == "reverting" ? FlowRecord::Phase::reverting : FlowRecord::Phase::running;
    r.task = static_cast<int>(s.integer(4));
    r.context = s.text(5);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace volgate::controller
