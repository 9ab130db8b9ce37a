#pragma once
// A backup repository in a directory (backup_storage.hpp):
//   DIR/chunks/ab/abcdef...  a chunk, under a folder named by its first two hex digits so that
//                            no folder grows past a few thousand entries
//   DIR/chunks/.tmp/         files being written (removed when the storage is opened: no
//                            writer exists then, so what is there is a crash's leftover)
//   DIR/chunks/.corrupt/     chunks a restore found damaged
//   DIR/manifests/ID.json    one per finished backup (DIR/manifests/.tmp while written)
//   DIR/lock                 flock()ed by the controller that uses it
// Writes go through write_file_atomically (atomic_file.hpp). A chunk's folder is fsynced by
// sync_chunks, once per folder rather than once per chunk; a manifest's at once.
#include "common/unique_fd.hpp"
#include "controller/backup/backup_storage.hpp"

namespace volgate::controller {

class DirectoryStorage final : public BackupStorage {
 public:
  // Creates the folders if needed, locks DIR/lock and clears the temporary folders. Throws
  // std::runtime_error when another process holds the lock, std::system_error naming a path.
  explicit DirectoryStorage(std::string directory);

  std::string where(Space space, const std::string& name) const override;
  void put(Space space, const std::string& name, std::span<const std::span<const std::byte>> parts) override;
  std::optional<std::string> get(Space space, const std::string& name, size_t limit) const override;
  bool contains(Space space, const std::string& name) const override;
  void remove(Space space, const std::string& name) override;
  std::vector<std::string> list(Space space) const override;
  void quarantine(const std::string& chunk) override;
  void sync_chunks(const std::vector<std::string>& names) override;
  std::string describe() const override { return "directory " + directory_; }

 private:
  std::string directory_;
  UniqueFd lock_;
};

}  // namespace volgate::controller
