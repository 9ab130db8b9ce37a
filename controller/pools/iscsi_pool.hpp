#pragma once
// A pool whose volumes are LUNs of the local tgtd (the user-space iSCSI target): each volume is
// a file in the pool's directory, kept by a FilePool, and served as LUN 1 of its own target
// (PREFIX:volume-ID) on every portal tgtd listens on. Targets are managed with tgtadm, so the
// pool needs nothing from the kernel.
//
// The target is found again by its name rather than remembered by tid, so exposing and
// unexposing are idempotent and survive a controller restart.
#include <mutex>

#include "controller/pools/file_pool.hpp"

namespace volgate::controller {

class IscsiPool final : public Pool {
 public:
  explicit IscsiPool(PoolConfig config);

  const PoolConfig& config() const override { return config_; }
  PoolCapacity capacity() override { return files_.capacity(); }
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
  bool volume_exists(const std::string& volume_id) override { return files_.volume_exists(volume_id); }
  // The backing file: header work (LUKS format) happens on the controller's host.
  std::unique_ptr<backends::BlockDevice> open_volume(const std::string& volume_id) override {
    return files_.open_volume(volume_id);
  }
  // iscsi://PORTAL[,PORTAL...]/IQN/1: every portal, for the data plane's multipath.
  gateway::ExportSpec export_spec(const std::string& volume_id) const override;

  void create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                       const CopyProgress& progress) override {
    files_.create_snapshot(snapshot_id, volume_id, progress);
  }
  void delete_snapshot(const std::string& snapshot_id) override { files_.delete_snapshot(snapshot_id); }

  std::string target_name(const std::string& volume_id) const;

 private:
  // Creates the target and its LUN when missing.
  void expose(const std::string& volume_id);
  // Deletes the target (with --force: a volume being deleted has no business being in use).
  void unexpose(const std::string& volume_id);
  // Runs tgtadm with `args`; returns its output, throws with it when tgtadm fails.
  std::string tgtadm(const std::vector<std::string>& args) const;

  PoolConfig config_;
  FilePool files_;
  std::mutex mutex_;  // tid allocation: find the lowest free tid and take it
};

}  // namespace volgate::controller
