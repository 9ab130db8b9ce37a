#pragma once
// A place where volumes live: a directory of files, a Ceph pool, a tgtd target. The scheduler
// chooses among pools by their capacity and capabilities; the flows call them to create, copy,
// extend, snapshot and delete volumes.
//
// Every call is idempotent (creating what exists, deleting what is gone, succeed), because a
// flow replayed or reverted after a crash repeats whatever call it was making.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/block_device.hpp"
#include "controller/pools/volume_io.hpp"
#include "gateway/export_spec.hpp"

namespace volgate::controller {

struct PoolConfig {
  std::string name;
  std::string driver;  // "file", "iscsi" or "rbd"
  std::string directory;  // where the volume files live (iscsi: the LUNs' backing files)
  std::string availability_zone = "nova";
  // Thin pools may promise this many times their size (Cinder's max_over_subscription_ratio).
  double max_over_subscription_ratio = 20.0;
  // Share of the capacity never handed out, in percent (Cinder's reserved_percentage).
  int reserved_percentage = 0;
  bool thin_provisioning = true;
  // Bytes per second a copy may use (0: unlimited), so a long copy does not starve the I/O of
  // volumes in use on the same storage (Cinder's volume_copy_bps_limit).
  uint64_t copy_bps_limit = 0;
  // More capabilities a volume type can ask for, e.g. {"storage_tier": "ssd"}.
  std::map<std::string, std::string> capabilities;

  // iscsi pools: the local tgtd serves one target per volume on every portal it listens on.
  std::vector<std::string> portals;  // HOST:PORT, as given to tgtd --iscsi portal=
  std::string iqn_prefix = "iqn.2026-11.org.volgate";
  std::string tgt_ipc_socket;  // TGT_IPC_SOCKET for tgtadm; empty: tgtd's default
  // Who may log in. tgtd admits an initiator whose name OR address is on a target's list, so
  // the two are never bound together (that would admit the name from anywhere and anyone from
  // the addresses): the targets admit initiator_addresses when given, else initiator_name.
  // The gateway logs in with initiator_name either way (the export target says so).
  std::string initiator_name;  // finish_config: default_initiator_name() for iscsi pools
  std::vector<std::string> initiator_addresses;
  // Incoming CHAP on every target when set: the user, and the file holding its secret (read by
  // the controller to configure tgtd and by the gateway to log in; never in the config itself).
  std::string chap_user;
  std::string chap_secret_file;

  // rbd pools: one RBD image per volume and per snapshot in a Ceph pool.
  std::string rbd_pool;
  std::string ceph_conf;
  std::string ceph_client = "admin";  // cephx user (client.NAME)
  std::string ceph_keyring;  // its key; empty: the keyring the conf names
  // The capacity to report when the cluster reports none (a cluster without a manager).
  double total_capacity_gb = 0;
};

struct PoolCapacity {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

// Reports a copy's progress; throws to cancel the copy (e.g. the controller is stopping).
using CopyProgress = std::function<void(uint64_t done, uint64_t total)>;

class Pool {
 public:
  virtual ~Pool() = default;

  virtual const PoolConfig& config() const = 0;
  virtual PoolCapacity capacity() = 0;
  // What this pool offers, as the capabilities filter matches them: the built-in ones
  // (thin_provisioning_support, snapshot_support, encryption_support, multiattach, driver)
  // and the configured ones.
  virtual std::map<std::string, std::string> capabilities() const = 0;

  virtual void create_volume(const std::string& volume_id, uint64_t bytes) = 0;
  // A new volume holding a copy of another volume or snapshot of this pool, or of an image
  // file (read from the open descriptor `image_fd`, from offset 0), grown to `bytes`.
  virtual void clone_volume(const std::string& volume_id, const std::string& source_volume_id, uint64_t bytes,
                            const CopyProgress& progress) = 0;
  virtual void create_volume_from_snapshot(const std::string& volume_id, const std::string& snapshot_id,
                                           uint64_t bytes, const CopyProgress& progress) = 0;
  virtual void create_volume_from_file(const std::string& volume_id, int image_fd, uint64_t bytes,
                                       const CopyProgress& progress) = 0;
  // Sets the size; shrinking is only used to revert an extend nobody has seen yet.
  virtual void resize_volume(const std::string& volume_id, uint64_t bytes) = 0;
  virtual void delete_volume(const std::string& volume_id) = 0;
  virtual bool volume_exists(const std::string& volume_id) = 0;
  virtual std::unique_ptr<backends::BlockDevice> open_volume(const std::string& volume_id) = 0;
  // How the gateway reaches the volume: its storage and the options to open it with.
  virtual gateway::ExportSpec export_spec(const std::string& volume_id) const = 0;

  // `progress` as for copies: a pool that copies data reports through it (and stops when it
  // throws); one that snapshots in place may ignore it.
  virtual void create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                               const CopyProgress& progress) = 0;
  virtual void delete_snapshot(const std::string& snapshot_id) = 0;

  // Backups read a volume (or a snapshot of an in-use one) and restores overwrite one, as the
  // pool stores them. Pools that cannot yet say so.
  virtual std::unique_ptr<VolumeReader> read_volume(const std::string& volume_id) {
    no_backups(volume_id);
  }
  virtual std::unique_ptr<VolumeReader> read_snapshot(const std::string& snapshot_id) {
    no_backups(snapshot_id);
  }
  // Everything the volume held is discarded first.
  virtual std::unique_ptr<VolumeWriter> overwrite_volume(const std::string& volume_id) {
    no_backups(volume_id);
  }

  // Backup snapshots, for pools whose storage can say what changed between two snapshots of a
  // volume (RBD, as Cinder's Ceph backup driver uses it): a backup is read from a snapshot of
  // the volume named after it, left on the volume afterwards, so that the next incremental
  // reads only what changed since. They are the pool's own: no volgate snapshot lists them, and
  // delete_volume removes them with the volume. The flows decide which ones to keep.
  virtual bool keeps_backup_snapshots() const { return false; }
  virtual void create_backup_snapshot(const std::string& volume_id, const std::string& backup_id) {
    (void)backup_id;
    no_backups(volume_id);
  }
  // The backups whose snapshots the volume has (none when the volume is gone).
  virtual std::vector<std::string> backup_snapshots(const std::string& volume_id) {
    (void)volume_id;
    return {};
  }
  // Nothing when it (or the volume) is gone.
  virtual void delete_backup_snapshot(const std::string& volume_id, const std::string& backup_id) {
    (void)volume_id;
    (void)backup_id;
  }
  // Reads backup `backup_id`'s snapshot; when the volume still has `since_backup_id`'s snapshot
  // (non-empty), the reader knows what changed since it (VolumeReader::changes_known).
  virtual std::unique_ptr<VolumeReader> read_backup_snapshot(const std::string& volume_id, const std::string& backup_id,
                                                             const std::string& since_backup_id) {
    (void)backup_id;
    (void)since_backup_id;
    no_backups(volume_id);
  }

 private:
  [[noreturn]] void no_backups(const std::string&) const {
    throw std::runtime_error("pool '" + config().name + "' (driver " + config().driver +
                             ") cannot back up or restore volumes yet");
  }
};

}  // namespace volgate::controller
