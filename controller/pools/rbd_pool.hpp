#pragma once
// A pool in Ceph: each volume is an RBD image (volume-ID) of one Ceph pool; each snapshot is an
// RBD snapshot of it, reached through a layered clone named snapshot-ID. Volumes made from a
// snapshot or a volume are full copies, so no volume depends on another image. Thin, like RBD.
//
// Encrypted volumes are LUKS2 inside the image: open_volume gives the crypto module an
// RbdDevice over the pool's own cluster connection, so the header is written through librbd.
#include <memory>

#include "backends/rados_cluster.hpp"
#include "controller/pools/pool.hpp"

namespace volgate::controller {

class RbdPool final : public Pool {
 public:
  // Connects to the cluster. Throws std::runtime_error naming the pool and the reason.
  explicit RbdPool(PoolConfig config);
  ~RbdPool() override;

  const PoolConfig& config() const override { return config_; }
  PoolCapacity capacity() override;
  std::map<std::string, std::string> capabilities() const override;

  void create_volume(const std::string& volume_id, uint64_t bytes) override;
  void clone_volume(const std::string& volume_id, const std::string& source_volume_id, uint64_t bytes,
                    const CopyProgress& progress) override;
  void create_volume_from_snapshot(const std::string& volume_id, const std::string& snapshot_id, uint64_t bytes,
                                   const CopyProgress& progress) override;
  void create_volume_from_file(const std::string& volume_id, int image_fd, uint64_t bytes,
                               const CopyProgress& progress) override;
  void resize_volume(const std::string& volume_id, uint64_t bytes) override;
  void delete_volume(const std::string& volume_id) override;
  bool volume_exists(const std::string& volume_id) override;
  std::unique_ptr<backends::BlockDevice> open_volume(const std::string& volume_id) override;
  // rbd:POOL/volume-ID,ceph-conf=PATH[,ceph-id=NAME][,keyring=PATH], as `volgate serve --export` takes it.
  gateway::ExportSpec export_spec(const std::string& volume_id) const override;

  // A native RBD snapshot: instant, nothing to report.
  void create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                       const CopyProgress& progress) override;
  void delete_snapshot(const std::string& snapshot_id) override;

  // The image's bytes through librbd (rbd_volume_io.hpp); an overwrite discards first.
  std::unique_ptr<VolumeReader> read_volume(const std::string& volume_id) override;
  std::unique_ptr<VolumeReader> read_snapshot(const std::string& snapshot_id) override;
  std::unique_ptr<VolumeWriter> overwrite_volume(const std::string& volume_id) override;

  // RBD snapshots volume-ID@backup.BACKUP_ID: not protected (nothing is cloned from them).
  bool keeps_backup_snapshots() const override { return true; }
  void create_backup_snapshot(const std::string& volume_id, const std::string& backup_id) override;
  std::vector<std::string> backup_snapshots(const std::string& volume_id) override;
  void delete_backup_snapshot(const std::string& volume_id, const std::string& backup_id) override;
  std::unique_ptr<VolumeReader> read_backup_snapshot(const std::string& volume_id, const std::string& backup_id,
                                                     const std::string& since_backup_id) override;

 private:
  struct Cluster;
  backends::RadosClientOptions client_options() const;
  void copy_image(const std::string& source, const std::string& target, uint64_t bytes, const CopyProgress& progress);
  void remove_image(const std::string& name);
  void remove_rbd_snapshot(const std::string& volume, const std::string& name);

  PoolConfig config_;
  std::unique_ptr<Cluster> cluster_;
};

}  // namespace volgate::controller
