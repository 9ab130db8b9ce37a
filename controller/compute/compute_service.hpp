#pragma once
// The compute service: what Nova's API and compute manager do for volumes. It attaches and
// detaches volumes to the servers of this host (libvirt domains), keeping a block device mapping
// per attached volume, through the volume service's attachment API (as Nova uses Cinder's) and
// the hypervisor. Attaches and detaches on one server run one at a time (a lock per server);
// different servers in parallel. Each is a flow (journaled, reverted on failure, recovered after
// a crash), run whole on the caller's thread.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "controller/compute/compute_services.hpp"
#include "controller/compute/power_jobs.hpp"

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

struct ComputeOptions {
  // How long os-stop waits for the guest to shut down before powering it off (Nova's
  // shutdown_timeout).
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(60)};
  bool cross_az_attach = false;  // see ComputeServices
};

// Nova's vm_state of a server in `state`: active, paused, stopped, error.
std::string_view vm_state(ServerState state);

class ComputeService {
 public:
  ComputeService(Store& store, VolumeService& volumes, Hypervisor& hypervisor, BeforeTask before_task = {},
                 ComputeOptions options = {});
  // Waits for the stops still running.
  ~ComputeService();

  // The flow kinds recover() handles (the volume service leaves them to it).
  static const std::vector<std::string>& flow_kinds();
  // Reverts or finishes the compute flows a previous run left half done, and those an attach's
  // revert left parked (a disk libvirt would not take out of the guest: see Task's
  // revert_must_succeed).
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

  // Nova's os-start: boots a shut-off server (409 in any other state). Its volumes' exports are
  // checked first, and served again through the export check when one is missing, so that the
  // guest does not boot with a disk QEMU cannot open (409 when one still is not served).
  void start_server(const std::string& server);
  // Nova's os-stop: a running or paused server (409 otherwise) is shut down in the background,
  // gracefully for up to the shutdown timeout, then powered off; this returns once it is asked.
  void stop_server(const std::string& server);

  // First recovers the server's flows left in the journal (a parked attach's revert is tried
  // again whenever libvirt says something of the server, or is reached anew, unless the guest
  // is paused). Then releases
  // (ReleaseVolumeFlow) every volume mapped to server `uuid` whose disk is no longer there: the
  // domain is gone, or the disk is in neither its live nor its persistent XML. Under the
  // server's lock, so never in the middle of an attach or detach. Returns how many volumes it
  // released. Throws when libvirt cannot tell.
  size_t reconcile_server(const std::string& uuid);
  // reconcile_server for every server that has mappings (at start and at each new connection
  // to libvirt: the events in between were missed). Logs what fails.
  size_t reconcile_servers();

 private:
  template <class F>
  void run(const std::string& server_id, typename F::Context context);
  template <class F>
  void recover_one(const FlowRecord& record);
  // recover_one for each compute flow of server `uuid` in the journal; the caller holds the
  // server's lock, so none of them is running.
  void recover_flows_of(const std::string& uuid);
  // Whether the volume's disk is in the server (its live definition, or the persistent one when
  // shut off); true when libvirt cannot say or the domain is gone.
  bool in_guest(const std::string& server_id, const std::string& volume_id);
  std::string server_uuid(const std::string& server);
  std::mutex& server_lock(const std::string& server_id);
  void check_exports(const std::string& server_id);

  ComputeServices services_;
  ComputeOptions options_;
  PowerJobs power_jobs_;  // waited for by the destructor, before anything they use goes
  std::mutex locks_mutex_;
  std::map<std::string, std::unique_ptr<std::mutex>> server_locks_;
};

}  // namespace volgate::controller
