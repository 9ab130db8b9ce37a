#pragma once
// The compute service: what Nova's API and compute manager do for volumes. It attaches and
// detaches volumes to the servers of this host (libvirt domains), keeping a block device mapping
// per attached volume, through the volume service's attachment API (as Nova uses Cinder's) and
// the hypervisor. Attaches and detaches on one server run one at a time (a lock per server);
// different servers in parallel. Each is a flow (journaled, reverted on failure, recovered after
// a crash), run whole on the caller's thread.
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "controller/compute/compute_services.hpp"

namespace volgate::controller {

struct AttachVolumeRequest {
  std::string project;
  std::string server;  // UUID or unique name
  std::string volume_id;
  std::string device;  // empty: the next free name
  std::string tag;
  bool delete_on_termination = false;
};

class ComputeService {
 public:
  ComputeService(Store& store, VolumeService& volumes, Hypervisor& hypervisor, BeforeTask before_task = {});

  // The flow kinds recover() handles (the volume service leaves them to it).
  static const std::vector<std::string>& flow_kinds();
  // Reverts or finishes the compute flows a previous run left half done.
  void recover();

  BlockDeviceMapping attach_volume(const AttachVolumeRequest& request);
  void detach_volume(const std::string& project, const std::string& server, const std::string& volume_id);
  std::vector<BlockDeviceMapping> volume_attachments(const std::string& project, const std::string& server);
  BlockDeviceMapping volume_attachment(const std::string& project, const std::string& server,
                                       const std::string& volume_id);

 private:
  template <class F>
  void run(const std::string& server_id, typename F::Context context);
  template <class F>
  void recover_one(const FlowRecord& record);
  std::string server_uuid(const std::string& server);
  std::mutex& server_lock(const std::string& server_id);

  ComputeServices services_;
  std::mutex locks_mutex_;
  std::map<std::string, std::unique_ptr<std::mutex>> server_locks_;
};

}  // namespace volgate::controller
