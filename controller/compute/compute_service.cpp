#include "controller/compute/compute_service.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <type_traits>

#include "controller/api/api_error.hpp"
#include "controller/compute/action_log.hpp"
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
  run<AttachVolumeFlow>(server_id, {.request_id = r.request_id.empty() ? new_request_id() : r.request_id,
                                    .project = r.project, .server_id = server_id, .volume_id = r.volume_id,
                                    .device = r.device, .bus = r.bus, .tag = r.tag,
                                    .delete_on_termination = r.delete_on_termination});
  return *services_.store.find_mapping(server_id, r.volume_id);
}

void ComputeService::detach_volume(const std::string& project, const std::string& server, const std::string& volume_id,
                                   const std::string& request_id) {
  const std::string server_id = server_uuid(server);
  run<DetachVolumeFlow>(server_id, {.request_id = request_id.empty() ? new_request_id() : request_id,
                                    .project = project, .server_id = server_id, .volume_id = volume_id});
}

std::vector<InstanceAction> ComputeService::actions(const std::string& server) {
  return services_.store.actions_of_server(server_uuid(server));
}

InstanceAction ComputeService::action(const std::string& server, const std::string& request_id) {
  const std::string server_id = server_uuid(server);
  auto found = services_.store.find_action(request_id);
  if (!found || found->server_id != server_id)
    not_found("Action " + request_id + " on instance " + server_id + " could not be found.");
  return *found;
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

// Attaches are reverted unless their last task ran. A detach whose disk has left the guest
// (live and definition) is finished: reverting it would say in-use of a volume the guest no
// longer has.
template <class F>
void ComputeService::recover_one(const FlowRecord& record) {
  Flow<typename F::Context> flow(services_.store, record, F::tasks(services_));
  bool finish = flow.was_in_last_task();
  if constexpr (std::is_same_v<F, DetachVolumeFlow>)
    finish = finish || (static_cast<size_t>(record.task) >= flow.index_of("detach_disk") &&
                        !in_guest(flow.context().server_id, flow.context().volume_id));
  flow.recover(finish);
}

bool ComputeService::in_guest(const std::string& server_id, const std::string& volume_id) {
  // For a running guest the live XML tells (a kill between the live detach and the
  // definition's is finished by resuming); a domain gone is not for the flow to settle.
  try {
    return services_.hypervisor.with_driver([&](VirtDriver& v) {
      auto server = v.find_server(server_id);
      if (!server) return true;
      for (const auto& d : v.disks(server_id, server->state == ServerState::shut_off))
        if (d.serial == volume_id) return true;
      return false;
    });
  } catch (const std::exception&) {
    return true;  // cannot tell: keep the volume attached, which loses nothing
  }
}

void ComputeService::recover() {
  for (const FlowRecord& record : services_.store.journal_unfinished()) {
    if (record.kind == AttachVolumeFlow::kind) recover_one<AttachVolumeFlow>(record);
    if (record.kind == DetachVolumeFlow::kind) recover_one<DetachVolumeFlow>(record);
  }
}

}  // namespace volgate::controller
