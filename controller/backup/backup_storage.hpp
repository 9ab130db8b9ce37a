#pragma once
// Where a backup repository keeps its bytes: named objects in two spaces, chunks and manifests.
// The chunk format, the checks, the pins and the deletion rules (chunk_store.hpp,
// backup_repository.hpp) are the same for every kind; a storage only stores:
//   directory  files under a directory (directory_storage.hpp), written under a temporary name,
//              fsynced and renamed; the default
//   rados      objects in a Ceph pool (rados_storage.hpp): write_full is atomic, so no temporary
//              objects; the lock is a RADOS exclusive lock
// Opening a storage takes its lock: one controller uses a repository at a time.
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace volgate::controller {

struct BackupRepositoryConfig;

class BackupStorage {
 public:
  enum class Space { chunks, manifests };

  virtual ~BackupStorage() = default;

  // Where object `name` is, for messages (and for tests that damage a chunk on purpose).
  virtual std::string where(Space space, const std::string& name) const = 0;
  // Stores `parts` one after the other as object `name`, atomically: a reader sees the whole
  // object or none (or the old one). A manifest is durable when put returns; chunks may wait for
  // sync_chunks (a crash may lose them then, never leave them partial).
  virtual void put(Space space, const std::string& name, std::span<const std::span<const std::byte>> parts) = 0;
  // The whole object, or nothing when it does not exist. Throws std::runtime_error when it
  // holds more than `limit` bytes, std::system_error when it cannot be read.
  virtual std::optional<std::string> get(Space space, const std::string& name, size_t limit) const = 0;
  virtual bool contains(Space space, const std::string& name) const = 0;
  // Nothing when it is gone.
  virtual void remove(Space space, const std::string& name) = 0;
  virtual std::vector<std::string> list(Space space) const = 0;
  // Moves a chunk out of the chunks (kept aside for an operator); nothing when it is gone.
  virtual void quarantine(const std::string& chunk) = 0;
  // Makes these chunks durable under their names, before a manifest names them.
  virtual void sync_chunks(const std::vector<std::string>& names) = 0;
  // "directory /srv/backups", "Ceph pool backups": for messages.
  virtual std::string describe() const = 0;
};

// The storage `config` names, opened and locked. Throws std::runtime_error naming it when it is
// in use by another controller or cannot be reached.
std::unique_ptr<BackupStorage> open_backup_storage(const BackupRepositoryConfig& config);

}  // namespace volgate::controller
