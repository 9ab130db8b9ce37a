#pragma once
// A pool whose volumes are LUNs of the local tgtd (the user-space iSCSI target): each volume is
// a file in the pool's directory, kept by a FilePool, and served as LUN 1 of its own target
// (PREFIX:volume-ID) on every portal tgtd listens on. Targets are managed with tgtadm, so the
// pool needs nothing from the kernel.
//
// The target is found again by its name rather than remembered by tid, so exposing and
// unexposing are idempotent and survive a controller restart.
//
// Who may log in is set on every target (see target_access): the gateway's initiator name (or
// the configured addresses) and, when configured, incoming CHAP. A target is never open to
// anyone, not even between its creation and its access list; at start, targets left by an
// earlier controller, perhaps open to all, are brought to the configured access too.
#include <mutex>

#include "controller/pools/file_pool.hpp"
#include "controller/pools/tgt_access.hpp"
#include "crypto/secure_bytes.hpp"

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
  // iscsi://PORTAL[,PORTAL...]/IQN/1,initiator-name=NAME[,chap-user=U,chap-secret-file=PATH]:
  // every portal, for the data plane's multipath, and how to get past the target's access check.
  gateway::ExportSpec export_spec(const std::string& volume_id) const override;

  void create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                       const CopyProgress& progress) override {
    files_.create_snapshot(snapshot_id, volume_id, progress);
  }
  void delete_snapshot(const std::string& snapshot_id) override { files_.delete_snapshot(snapshot_id); }

  // Backups and restores go through the backing files, as for a file pool. A restore writes
  // the file while tgtd still serves it as a LUN: the volume is available (nobody is logged in
  // to read a half-restored LUN), tgtd's rdwr store reads and writes the file through the same
  // page cache with no cache of its own, and the LUN's size is the file's, which a restore
  // keeps; so the target needs no change.
  std::unique_ptr<VolumeReader> read_volume(const std::string& volume_id) override {
    return files_.read_volume(volume_id);
  }
  std::unique_ptr<VolumeReader> read_snapshot(const std::string& snapshot_id) override {
    return files_.read_snapshot(snapshot_id);
  }
  std::unique_ptr<VolumeWriter> overwrite_volume(const std::string& volume_id) override {
    return files_.overwrite_volume(volume_id);
  }

  std::string target_name(const std::string& volume_id) const;

 private:
  // Creates the target and its LUN when missing; gives it the configured access either way.
  void expose(const std::string& volume_id);
  // Deletes the target (with --force: a volume being deleted has no business being in use).
  void unexpose(const std::string& volume_id);
  // At start: the CHAP account gets the secret now in the file, and every target of this pool
  // the configured access, whatever an earlier controller (or configuration) left.
  void secure_existing_targets();
  // Runs access_commands for one target; `accounts` is tgtd's account list, read when empty.
  void apply_access(int tid, const TgtTarget& has, std::vector<std::string>& accounts);
  // (Re)creates the CHAP account with the secret from chap_secret_file (see the .cpp).
  void install_chap_account(const std::map<std::string, TgtTarget>& targets);
  // tgtadm --op new --mode account --user USER --password SECRET.
  void new_account(const std::string& user, const crypto::SecureBytes& secret);
  // Runs tgtadm with `args`, then "--password" and `password` when one is given; returns its
  // output, throws with it when tgtadm fails (naming the arguments, never the password).
  std::string tgtadm(const std::vector<std::string>& args, const crypto::SecureBytes* password = nullptr) const;
  std::string show_targets() const { return tgtadm({"--op", "show", "--mode", "target"}); }

  PoolConfig config_;
  FilePool files_;
  std::mutex mutex_;  // tid allocation: find the lowest free tid and take it
};

}  // namespace volgate::controller
