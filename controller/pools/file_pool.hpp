#pragma once
// A pool that is a directory: one sparse file per volume (volume-ID.img) and per snapshot
// (snapshot-ID.img). Snapshots and clones are reflinks where the filesystem can share blocks
// (XFS, btrfs), otherwise sparse copies; capacity comes from statvfs.
#include "controller/pools/pool.hpp"

namespace volgate::controller {

class FilePool final : public Pool {
 public:
  // Creates the directory if needed. Throws std::runtime_error naming it.
  explicit FilePool(PoolConfig config);

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
  gateway::ExportSpec export_spec(const std::string& volume_id) const override;

  void create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                       const CopyProgress& progress) override;
  void delete_snapshot(const std::string& snapshot_id) override;

  std::unique_ptr<VolumeReader> read_volume(const std::string& volume_id) override;
  std::unique_ptr<VolumeReader> read_snapshot(const std::string& snapshot_id) override;
  std::unique_ptr<VolumeWriter> overwrite_volume(const std::string& volume_id) override;

  std::string volume_path(const std::string& volume_id) const;
  std::string snapshot_path(const std::string& snapshot_id) const;

 private:
  // Copies `source` into a new file `target` of `bytes` (at least the source's size): a
  // reflink when `try_reflink` and the filesystem allows, else a copy that skips holes and
  // zero blocks so a thin source stays thin.
  void copy_file(const std::string& source, const std::string& target, uint64_t bytes, bool try_reflink,
                 const CopyProgress& progress);
  // Copies from the open descriptor `in` (`source` names it in errors).
  void copy_from(int in, const std::string& source, const std::string& target, uint64_t bytes, bool try_reflink,
                 const CopyProgress& progress);

  PoolConfig config_;
};

}  // namespace volgate::controller
