#include "controller/compute/compute_service.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <set>
#include <type_traits>

#include "controller/api/api_error.hpp"
#include "controller/compute/action_log.hpp"
#include "controller/compute/attach_volume.hpp"
#include "controller/compute/detach_volume.hpp"
#include "controller/compute/release_volume.hpp"

namespace volgate::controller {
namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

}  // namespace

std::string_view vm_state(ServerState state) {
  switch (state) {
    case ServerState::running: return "active";
    case ServerState::paused: return "paused";
    case ServerState::shut_off: return "stopped";
    case ServerState::other: break;
  }
  return "error";
}

ComputeService::ComputeService(Store& store, VolumeService& volumes, Hypervisor& hypervisor, BeforeTask before_task,
                               ComputeOptions options)
    : services_{store, volumes, hypervisor, host_name(), std::move(before_task), options.cross_az_attach},
      options_(options) {}

ComputeService::~ComputeService() { power_jobs_.wait_all(); }

const std::vector<std::string>& ComputeService::flow_kinds() {
  static const std::vector<std::string> kinds = {AttachVolumeFlow::kind, DetachVolumeFlow::kind,
                                                 ReleaseVolumeFlow::kind};
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

// Attaches are reverted unless their last task ran; releases are finished. A detach whose disk
// has left the guest is finished: reverting it would say in-use of a volume the guest no longer
// has.
template <class F>
void ComputeService::recover_one(const FlowRecord& record) {
  Flow<typename F::Context> flow(services_.store, record, F::tasks(services_));
  bool finish = F::on_restart == OnRestart::resume || flow.was_in_last_task();
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

void ComputeService::recover_flows_of(const std::string& uuid) {
  for (const FlowRecord& record : services_.store.journal_unfinished()) {
    if (record.resource_id != uuid) continue;
    if (record.kind == AttachVolumeFlow::kind) recover_one<AttachVolumeFlow>(record);
    if (record.kind == DetachVolumeFlow::kind) recover_one<DetachVolumeFlow>(record);
    if (record.kind == ReleaseVolumeFlow::kind) recover_one<ReleaseVolumeFlow>(record);
  }
}

void ComputeService::recover() {
  std::set<std::string> servers;
  const auto& kinds = flow_kinds();
  for (const FlowRecord& record : services_.store.journal_unfinished())
    if (std::find(kinds.begin(), kinds.end(), record.kind) != kinds.end()) servers.insert(record.resource_id);
  for (const auto& uuid : servers) {
    std::lock_guard lock(server_lock(uuid));
    recover_flows_of(uuid);
  }
}

// ------------------------------------------------------------------------------ power

void ComputeService::check_exports(const std::string& server_id) {
  std::vector<std::pair<std::string, std::string>> needed;  // volume id, export name
  for (const auto& m : services_.store.mappings_of_server(server_id)) {
    if (m.attachment_id.empty()) continue;
    try {
      needed.emplace_back(m.volume_id, services_.volumes.get_attachment(m.project, m.attachment_id).export_name);
    } catch (const ApiError& e) {
      if (e.kind != ApiError::Kind::not_found) throw;
      conflict("Cannot 'start' instance " + server_id + ": volume " + m.volume_id + " has lost its attachment " +
               m.attachment_id + "; detach it first.");
    }
  }
  if (needed.empty()) return;
  auto missing = [&] {
    const std::set<std::string> served = services_.volumes.served_exports();
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& n : needed)
      if (!served.count(n.second)) out.push_back(n);
    return out;
  };
  auto gone = missing();
  if (gone.empty()) return;
  for (const auto& [volume, name] : gone)
    spdlog::warn("server {}: export {} of volume {} is not served; serving it again before the start", server_id,
                 name, volume);
  services_.volumes.reconcile_exports();
  gone = missing();
  if (!gone.empty())
    conflict("Cannot 'start' instance " + server_id + ": the gateway does not serve volume " + gone.front().first +
             " (export " + gone.front().second + "), and serving it again failed; see the controller's log.");
}

void ComputeService::start_server(const std::string& server) {
  const std::string id = server_uuid(server);
  std::lock_guard lock(server_lock(id));
  auto s = services_.hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(id); });
  if (!s) not_found("Instance " + server + " could not be found.");
  if (s->state != ServerState::shut_off)
    conflict("Cannot 'start' instance " + id + " while it is in vm_state " + std::string(vm_state(s->state)));
  check_exports(id);
  services_.hypervisor.with_driver([&](VirtDriver& d) { d.start_server(id); });
  spdlog::info("server {} ({}): started", id, s->name);
}

void ComputeService::stop_server(const std::string& server) {
  const std::string id = server_uuid(server);
  {
    std::lock_guard lock(server_lock(id));
    auto s = services_.hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(id); });
    if (!s) not_found("Instance " + server + " could not be found.");
    if (s->state != ServerState::running && s->state != ServerState::paused)
      conflict("Cannot 'stop' instance " + id + " while it is in vm_state " + std::string(vm_state(s->state)));
  }
  power_jobs_.run([this, id] {
    try {
      std::lock_guard lock(server_lock(id));
      const bool graceful =
          services_.hypervisor.with_driver([&](VirtDriver& d) { return d.stop_server(id, options_.shutdown_timeout); });
      spdlog::info("server {}: stopped ({})", id, graceful ? "shut down by the guest" : "powered off");
    } catch (const std::exception& e) {
      spdlog::error("server {}: stop failed: {}", id, e.what());
    }
  });
}

// ------------------------------------------------------------------------------ reconcile

size_t ComputeService::reconcile_server(const std::string& uuid) {
  std::lock_guard lock(server_lock(uuid));
  // A parked attach's undo is tried again here, but not while the guest is paused: it cannot
  // let a virtio disk go then, and each try would hold this thread (libvirt's events) for every
  // detach attempt. Its resume is an event of its own.
  bool paused = false;
  try {
    paused = services_.hypervisor.with_driver([&](VirtDriver& d) {
      auto s = d.find_server(uuid);
      return s && s->state == ServerState::paused;
    });
  } catch (const std::exception&) {
    // libvirt cannot say: the recovery finds out for itself, and fails fast
  }
  if (!paused) recover_flows_of(uuid);
  std::vector<BlockDeviceMapping> mappings;
  // Only settled mappings: one attaching or detaching is a flow's, which recover() handles.
  for (auto& m : services_.store.mappings_of_server(uuid))
    if (m.status == MappingStatus::attached) mappings.push_back(std::move(m));
  if (mappings.empty()) return 0;
  std::set<std::string> present;  // serials of the disks in the live or the persistent XML
  auto server = services_.hypervisor.with_driver([&](VirtDriver& d) {
    auto s = d.find_server(uuid);
    if (!s) return s;
    auto add = [&](bool persistent) {
      for (const auto& disk : d.disks(uuid, persistent)) present.insert(disk.serial);
    };
    if (s->state != ServerState::shut_off) add(false);
    if (s->persistent) add(true);
    return s;
  });
  size_t released = 0;
  for (const auto& m : mappings) {
    if (server && present.count(m.volume_id)) continue;
    const char* why = server ? "its disk was removed from the server outside volgate"
                             : "the server is gone (undefined, or stopped while transient)";
    try {
      Flow<ReleaseVolumeContext> flow(services_.store, ReleaseVolumeFlow::kind, uuid,
                                      ReleaseVolumeFlow::tasks(services_),
                                      {.project = m.project, .server_id = uuid, .volume_id = m.volume_id,
                                       .mapping_id = m.id, .attachment_id = m.attachment_id},
                                      services_.before_task);
      flow.run();
      spdlog::warn("server {}: volume {} released, {}; it is available again", uuid, m.volume_id, why);
      ++released;
    } catch (const std::exception& e) {
      spdlog::error("server {}: volume {} could not be released ({}): {}", uuid, m.volume_id, why, e.what());
    }
  }
  return released;
}

size_t ComputeService::reconcile_servers() {
  std::set<std::string> servers;
  for (const auto& m : services_.store.all_mappings()) servers.insert(m.server_id);
  size_t released = 0;
  for (const auto& uuid : servers) {
    try {
      released += reconcile_server(uuid);
    } catch (const std::exception& e) {
      spdlog::warn("server {}: cannot compare its disks with its volumes: {}", uuid, e.what());
    }
  }
  return released;
}

}  // namespace volgate::controller
