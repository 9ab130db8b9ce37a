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
  std::string bus;     // scsi or virtio; empty: the device name's, else scsi
  std::string tag;
  bool delete_on_termination = false;
  std::string request_id;  // the action log's entry; empty: a new one
};

class ComputeService {
 public:
  ComputeService(Store& store, VolumeService& volumes, Hypervisor& hypervisor, BeforeTask before_task = {});

  // The flow kinds recover() handles (the volume service leaves them to it).
  static const std::vector<std::string>& flow_kinds();
  // Reverts or finishes the compute flows a previous run left half done.
  void recover();

  BlockDeviceMapping attach_volume(const AttachVolumeRequest& request);
  void detach_volume(const std::string& project, const std::string& server, const std::string& volume_id,
                     const std::string& request_id = {});
  std::vector<BlockDeviceMapping> volume_attachments(const std::string& project, const std::string& server);
  BlockDeviceMapping volume_attachment(const std::string& project, const std::string& server,
                                       const std::string& volume_id);
  // The volumes mapped to a server (by UUID), of every project.
  std::vector<BlockDeviceMapping> mappings_of(const std::string& server_id) {
    return services_.store.mappings_of_server(server_id);
  }
  const std::string& host() const { return services_.host; }
  const std::string& availability_zone() const { return services_.volumes.default_availability_zone(); }

  // The server's action log, newest first; one entry (404 when the server has none by that id).
  std::vector<InstanceAction> actions(const std::string& server);
  InstanceAction action(const std::string& server, const std::string& request_id);

 private:
  template <class F>
  void run(const std::string& server_id, typename F::Context context);
  template <class F>
  void recover_one(const FlowRecord& record);
  // Whether the volume's disk is in the server (its live definition, or the persistent one when
  // shut off); true when libvirt cannot say or the domain is gone.
  bool in_guest(const std::string& server_id, const std::string& volume_id);
  std::string server_uuid(const std::string& server);
  std::mutex& server_lock(const std::string& server_id);

  ComputeServices services_;
  std::mutex locks_mutex_;
  std::map<std::string, std::unique_ptr<std::mutex>> server_locks_;
};

}  // namespace volgate::controller
