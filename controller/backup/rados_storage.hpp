#pragma once
// A backup repository in a Ceph pool (backup_storage.hpp), through librados' C API: objects
//   chunk.HASH      a chunk            manifest.ID    a finished backup's manifest
//   corrupt.HASH    a chunk a restore found damaged, moved aside
//   lock            holds the repository's RADOS exclusive lock
// rados_write_full replaces an object whole, so a write is atomic without a temporary name,
// and it is durable when acknowledged (sync_chunks has nothing to do).
//
// The lock's cookie names the controller (its host and state directory, `owner`): a controller
// restarted after a crash finds its own earlier lock and breaks it; any other holder's lock
// refuses the repository, naming the holder.
#include <memory>

#include "backends/rados_cluster.hpp"
#include "controller/backup/backup_storage.hpp"

namespace volgate::controller {

class RadosStorage final : public BackupStorage {
 public:
  // Connects (the gateway's shared client code), opens `pool` and takes the lock. Throws
  // std::runtime_error naming the pool and the reason.
  RadosStorage(const backends::RadosClientOptions& client, std::string pool, std::string owner);
  ~RadosStorage() override;

  std::string where(Space space, const std::string& name) const override;
  void put(Space space, const std::string& name, std::span<const std::span<const std::byte>> parts) override;
  std::optional<std::string> get(Space space, const std::string& name, size_t limit) const override;
  bool contains(Space space, const std::string& name) const override;
  void remove(Space space, const std::string& name) override;
  std::vector<std::string> list(Space space) const override;
  void quarantine(const std::string& chunk) override;
  void sync_chunks(const std::vector<std::string>&) override {}
  std::string describe() const override { return "Ceph pool " + pool_; }

 private:
  void lock();
  std::string object(Space space, const std::string& name) const;

  std::shared_ptr<backends::RadosCluster> cluster_;  // outlives io_
  rados_ioctx_t io_ = nullptr;
  std::string pool_;
  std::string cookie_;
};

}  // namespace volgate::controller
