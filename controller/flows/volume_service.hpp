#pragma once
// The volume service: what Cinder's API, scheduler and volume manager do together, as flows
// of tasks over a Store and a set of Pools.
//
// A mutating request runs the first tasks of its flow (validate, reserve quota, create the DB
// entry, commit quota, or mark the status) on the caller's thread, so bad input, a quota limit
// or an illegal state comes back as an error at once; the rest (schedule, copy, delete on the
// pool) runs on a worker thread while the volume shows `creating` (with progress), `extending`
// or `deleting`. A failure there reverts the whole flow and leaves the volume in `error`
// (create), `available` (extend) or `error_deleting` (delete), with the quota usage matching
// what exists.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller_config.hpp"
#include "controller/flows/flow.hpp"
#include "controller/pools/image_files.hpp"
#include "controller/domain/key_wrap.hpp"
#include "controller/pools/pool.hpp"
#include "controller/store/store.hpp"

namespace volgate::controller {

struct CreateVolumeRequest {
  std::string project;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;
  std::string volume_type;        // empty: the default type
  std::string availability_zone;  // empty: the default zone
  std::string snapshot_id;        // at most one source
  std::string source_volid;
  std::string image;              // imageRef: a raw image file in an image directory
  std::optional<bool> encrypted;  // empty: as the volume type says
};

struct ServiceOptions {
  BeforeTask before_task;  // failure injection for tests
  // Runs the background part of each flow on the caller's thread (unit tests); its failure
  // is handled exactly as on a worker: logged, reverted, not thrown.
  bool run_inline = false;
};

struct PoolReport {
  PoolState state;
  std::string driver;
};

class VolumeService {
 public:
  VolumeService(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
                std::optional<KeyWrap> key_wrap, ServiceOptions options = {});
  ~VolumeService();
  VolumeService(const VolumeService&) = delete;
  VolumeService& operator=(const VolumeService&) = delete;

  // Finishes or reverts the flows a previous run left half done (see flow.hpp); call once
  // before serving requests.
  void recover();
  // Cancels running copies (their flows revert) and waits for the workers.
  void stop();
  // Waits until no flow runs in the background (tests).
  void wait_idle();

  Volume create_volume(const CreateVolumeRequest& request);
  Volume extend_volume(const std::string& project, const std::string& id, uint64_t new_size_gb);
  void delete_volume(const std::string& project, const std::string& id);
  Volume get_volume(const std::string& project, const std::string& id);
  std::vector<Volume> list_volumes(const std::string& project);

  Snapshot create_snapshot(const std::string& project, const std::string& volume_id, const std::string& name,
                           const std::string& description, bool force);
  void delete_snapshot(const std::string& project, const std::string& id);
  Snapshot get_snapshot(const std::string& project, const std::string& id);
  std::vector<Snapshot> list_snapshots(const std::string& project);

  QuotaUsage quota_usage(const std::string& project);
  void set_quota_limit(const std::string& project, const std::string& resource, int64_t limit);

  std::vector<PoolReport> pools();
  const std::map<std::string, VolumeType>& volume_types() const { return config_.volume_types; }
  // Percent of the copy done, while a volume is being created from a source.
  std::optional<double> progress(const std::string& volume_id);
  // How the data plane reaches the volume ("file:PATH"), empty before it is placed.
  std::string export_target(const Volume& volume);

 private:
  std::vector<Task> create_volume_tasks();
  std::vector<Task> extend_volume_tasks();
  std::vector<Task> delete_volume_tasks();
  std::vector<Task> create_snapshot_tasks();
  std::vector<Task> delete_snapshot_tasks();
  std::vector<Task> tasks_of(const std::string& kind);

  // Runs `sync_tasks` tasks now, the rest on a worker (or inline).
  void start_flow(std::shared_ptr<Flow> flow, size_t sync_tasks);
  void run_in_background(std::function<void()> work);
  void worker_loop();

  Pool& pool(const std::string& name);
  // The image a create flow opened in validate, by the handle in its context.
  std::shared_ptr<const OpenedImage> opened_image(const nlohmann::json& c);
  void release_image(const std::string& handle);
  std::vector<PoolState> pool_states();
  CopyProgress progress_reporter(const std::string& volume_id);
  void create_data(const nlohmann::json& c);
  void sweep_stuck_resources();

  ControllerConfig config_;
  Store& store_;
  std::map<std::string, std::unique_ptr<Pool>> pools_;
  std::vector<std::string> pool_order_;
  std::optional<KeyWrap> key_wrap_;
  ServiceOptions options_;
  Scheduler scheduler_;
  ImageFiles images_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> queue_;
  size_t running_ = 0;
  bool stopping_flag_ = false;
  std::atomic<bool> stopping_{false};
  std::map<std::string, double> progress_;
  // Image files opened by create requests, until their copy is done or reverted.
  std::map<std::string, std::shared_ptr<const OpenedImage>> opened_images_;
  std::vector<std::thread> workers_;
};

}  // namespace volgate::controller
