#include "controller/compute/compute_service.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <type_traits>

#include "controller/api/api_error.hpp"
#include "controller/compute/attach_volume.hpp"
#include "controller/compute/detach_volume.hpp"

namespace volgate::controller {
namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

}  // namespace

ComputeService::ComputeService(Store& store, VolumeService& volumes, Hypervisor& hypervisor, BeforeTask before_task)
    : services_{store, volumes, hypervisor, host_name(), std::move(before_task)} {}

const std::vector<std::string>& ComputeService::flow_kinds() {
  static const std::vector<std::string> kinds = {AttachVolumeFlow::kind, DetachVolumeFlow::kind};
  return kinds;
}

std::mutex& ComputeService::server_lock(const std::string& server_id) {
  std::lock_guard lock(locks_mutex_);
  auto& m = server_locks_[server_id];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

std::string ComputeService::server_uuid(const std::string& server) {
  auto found = services_.hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(server); });
  if (!found) not_found("Instance " + server + " could not be found.");
  return found->uuid;
}

template <class F>
void ComputeService::run(const std::string& server_id, typename F::Context context) {
  std::lock_guard lock(server_lock(server_id));
  Flow<typename F::Context> flow(services_.store, F::kind, server_id, F::tasks(services_), std::move(context),
                                 services_.before_task);
  flow.run();
}

BlockDeviceMapping ComputeService::attach_volume(const AttachVolumeRequest& r) {
  const std::string server_id = server_uuid(r.server);
  run<AttachVolumeFlow>(server_id, {.project = r.project, .server_id = server_id, .volume_id = r.volume_id,
                                    .device = r.device, .tag = r.tag,
                                    .delete_on_termination = r.delete_on_termination});
  return *services_.store.find_mapping(server_id, r.volume_id);
}

void ComputeService::detach_volume(const std::string& project, const std::string& server, const std::string& volume_id) {
  const std::string server_id = server_uuid(server);
  run<DetachVolumeFlow>(server_id, {.project = project, .server_id = server_id, .volume_id = volume_id});
}

std::vector<BlockDeviceMapping> ComputeService::volume_attachments(const std::string& project,
                                                                   const std::string& server) {
  std::vector<BlockDeviceMapping> out;
  for (auto& m : services_.store.mappings_of_server(server_uuid(server)))
    if (m.project == project) out.push_back(std::move(m));
  return out;
}

BlockDeviceMapping ComputeService::volume_attachment(const std::string& project, const std::string& server,
                                                     const std::string& volume_id) {
  auto m = services_.store.find_mapping(server_uuid(server), volume_id);
  if (!m || m->project != project) not_found("Volume " + volume_id + " is not attached to instance " + server + ".");
  return *m;
}

template <class F>
void ComputeService::recover_one(const FlowRecord& record) {
  Flow<typename F::Context> flow(services_.store, record, F::tasks(services_));
  flow.context().outcome.accepted = true;
  bool finish = static_cast<size_t>(record.task) + 1 == flow.task_count();
  if constexpr (std::is_same_v<F, DetachVolumeFlow>) {
    // A detach whose disk has left the guest is finished: reverting it would say in-use of a
    // volume the guest no longer has. For a running guest the live XML tells (the kill may
    // have come between the live detach and the definition's, which finishing completes).
    if (flow.context().began || !flow.context().mapping_id.empty()) {
      const auto& c = flow.context();
      bool in_guest = false;
      try {
        services_.hypervisor.with_driver([&](VirtDriver& v) {
          auto server = v.find_server(c.server_id);
          in_guest = !server;  // a domain gone is not for this flow to settle: keep what it had
          if (!server) return;
          const bool persistent = server->state == ServerState::shut_off;
          for (const auto& d : v.disks(c.server_id, persistent)) in_guest = in_guest || d.serial == c.volume_id;
        });
      } catch (const std::exception&) {
        in_guest = true;  // cannot tell: keep the volume attached, which loses nothing
      }
      finish = finish || (!in_guest && record.task >= 2);
    }
  }
  try {
    if (finish && record.phase == FlowRecord::Phase::running) {
      flow.resume();
    } else {
      spdlog::warn("flow {} {} (server {}): reverting what the previous run left half done", record.kind, record.id,
                   record.resource_id);
      flow.context().outcome.error = "the controller stopped before the operation finished";
      flow.revert(flow.context().outcome.error);
    }
  } catch (const std::exception& e) {
    spdlog::error("flow {} {}: could not finish or revert: {}", record.kind, record.id, e.what());
  }
}

void ComputeService::recover() {
  for (const FlowRecord& record : services_.store.journal_unfinished()) {
    if (record.kind == AttachVolumeFlow::kind) recover_one<AttachVolumeFlow>(record);
    if (record.kind == DetachVolumeFlow::kind) recover_one<DetachVolumeFlow>(record);
  }
}

}  // namespace volgate::controller
