#pragma once
// What every flow uses: the configuration, the store, the pools and the scheduler, the master
// key, the image files requests opened, where uploaded images go, the backup repository, the
// copy progress board, and whether the controller is stopping. One object, owned by the
// VolumeService and handed to each flow's tasks.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "controller/backup/backup_repository.hpp"
#include "controller/controller_config.hpp"
#include "controller/domain/backup.hpp"
#include "controller/domain/key_wrap.hpp"
#include "controller/domain/snapshot.hpp"
#include "controller/domain/volume.hpp"
#include "controller/exports/gateway_exports.hpp"
#include "controller/flows/flow.hpp"
#include "controller/pools/image_files.hpp"
#include "controller/pools/image_uploads.hpp"
#include "controller/pools/pool.hpp"
#include "controller/pools/scheduler.hpp"
#include "controller/store/store.hpp"

namespace volgate::controller {

// What LUKS2 puts before the data with libcryptsetup's defaults: an encrypted volume's payload
// is its size minus this.
inline constexpr uint64_t kLuksHeaderBytes = 16 << 20;

// Thrown through a copy when the controller stops.
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("the controller stopped before the operation finished") {}
};

class FlowServices {
 public:
  FlowServices(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
               std::optional<KeyWrap> key_wrap, BeforeTask before_task);

  const ControllerConfig& config;
  Store& store;
  std::optional<KeyWrap> key_wrap;
  Scheduler scheduler;
  ImageFiles images;
  ImageUploads uploads;  // after `images`, which creates its directory
  const BeforeTask before_task;  // failure injection for tests
  std::atomic<bool> stopping{false};
  // The gateway that serves attached volumes on this host; null when none is configured.
  GatewayExports* gateway = nullptr;

  Pool& pool(const std::string& name);
  bool has_pool(const std::string& name) const { return pools_.count(name) != 0; }
  const std::map<std::string, std::unique_ptr<Pool>>& pools() const { return pools_; }
  // Every pool's capacity and what is allocated in it, in the configured order.
  std::vector<PoolState> pool_states();

  // The project's volume or snapshot; 404 (ApiError) when it is missing or another project's.
  Volume get_volume(const std::string& project, const std::string& id);
  Snapshot get_snapshot(const std::string& project, const std::string& id);
  Backup get_backup(const std::string& project, const std::string& id);

  // The backup repository (config.backups), opened at its first use: a controller that never
  // backs up never creates it. Throws std::runtime_error when it cannot be opened.
  BackupRepository& backup_repository();

  // Refuses (409, naming the operation) when more than `own` unfinished flows work on one of
  // `resource_ids`: the admin's repairs (reset status, force delete) skip the status checks
  // that keep operations apart, so they look at the flow journal instead. `own`: 1 when the
  // caller is itself a journaled flow on one of them.
  void refuse_while_busy(const std::string& what, const std::vector<std::string>& resource_ids, size_t own = 0);
  // The same for a backup, which flows also work on under its volume's id (a backup being made)
  // or its target's (a restore): those are found by the backup id in their context.
  void refuse_while_backup_busy(const std::string& backup_id, size_t own = 0);

  // Progress of copies, in percent, while a volume is being created from a source.
  CopyProgress progress_reporter(const std::string& volume_id);
  std::optional<double> progress(const std::string& volume_id);
  void clear_progress(const std::string& volume_id);

  // Serves `volume` as `export_name` on the gateway, unlocked with its passphrase when it is
  // encrypted (unwrapped here, only to travel over the control socket). Idempotent. Throws
  // ApiError: 503 when there is no gateway or it does not answer, 500 when it cannot open it.
  void publish_export(const Volume& volume, const std::string& export_name, bool read_only);
  // Stops serving `export_name`. A failure is logged, not thrown: an export left behind is owned
  // by no attachment, and the export check (export_reconciler.hpp) removes it.
  void withdraw_export(const std::string& export_name);

  // Image files opened by create requests, held by a handle in the flow's context until the
  // copy is done or reverted.
  std::string hold_image(OpenedImage image);
  std::shared_ptr<const OpenedImage> held_image(const std::string& handle);
  void release_image(const std::string& handle);

 private:
  std::map<std::string, std::unique_ptr<Pool>> pools_;
  std::vector<std::string> pool_order_;
  std::mutex mutex_;
  std::map<std::string, double> progress_;
  std::map<std::string, std::shared_ptr<const OpenedImage>> images_held_;
  std::unique_ptr<BackupRepository> backup_repository_;
};

}  // namespace volgate::controller
