#include "controller/compute/detach_volume.hpp"

#include "controller/api/api_error.hpp"
#include "controller/compute/action_log.hpp"
#include "controller/compute/detach_tasks.hpp"

namespace volgate::controller {
namespace {
constexpr const char* kDetachEvent = "compute_detach_volume";
}  // namespace

std::vector<Task<DetachVolumeContext>> DetachVolumeFlow::tasks(ComputeServices& s) {
  using Context = DetachVolumeContext;
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    auto server = s.hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(c.server_id); });
    if (!server) not_found("Instance " + c.server_id + " could not be found.");
    if (server->state == ServerState::other)
      conflict("Cannot 'detach_volume' instance " + c.server_id + " while it is in neither a running, paused nor "
               "shut-off state.");
    c.server_id = server->uuid;
    s.volumes.get_volume(c.project, c.volume_id);
    // Before the mapping: a root disk the server was defined with has none, and "not attached"
    // would be false.
    s.hypervisor.with_driver([&](VirtDriver& d) {
      for (bool persistent : {false, true}) {
        if (persistent ? !server->persistent : server->state == ServerState::shut_off) continue;
        for (const auto& disk : d.disks(c.server_id, persistent))
          if (disk.serial == c.volume_id && disk.boot) bad_request("Cannot detach a root device volume");
      }
    });
    auto m = s.store.find_mapping(c.server_id, c.volume_id);
    if (!m || m->project != c.project)
      not_found("Volume " + c.volume_id + " is not attached to instance " + c.server_id + ".");
    if (m->status != MappingStatus::attached)
      conflict("Volume " + c.volume_id + " is " + std::string(to_string(m->status)) + " on instance " +
               c.server_id + "; wait until that is done.");
    c.mapping_id = m->id;
    c.attachment_id = m->attachment_id;
  }, {}});

  tasks.push_back({"start_action", [&s](Context& c) {
    record_action_start(s.store, {c.request_id, c.server_id, c.project, "detach_volume", kDetachEvent});
  }, [&s](Context& c) { record_event_end(s.store, c.request_id, kDetachEvent, c.outcome.error); }});

  tasks.push_back(begin_detaching_task<Context>(s));

  tasks.push_back({"detach_disk", [&s](Context& c) {
    s.hypervisor.with_driver([&](VirtDriver& d) { d.detach_disk(c.server_id, c.volume_id); });
  }, {}});  // nothing to put back: a disk that did not go is still there

  tasks.push_back(delete_attachment_task<Context>(s));
  tasks.push_back(destroy_mapping_task<Context>(s));

  tasks.push_back({"finish_action", [&s](Context& c) { record_event_end(s.store, c.request_id, kDetachEvent, ""); },
                   {}});
  return tasks;
}

}  // namespace volgate::controller
