#include "controller/compute/attach_volume.hpp"

#include <nlohmann/json.hpp>
#include <set>

#include "controller/api/api_error.hpp"
#include "controller/compute/action_log.hpp"

namespace volgate::controller {
namespace {

using Context = AttachVolumeContext;
using nlohmann::json;

constexpr const char* kAttachEvent = "compute_attach_volume";

Server server_for_attach(ComputeServices& s, const std::string& id) {
  auto server = s.hypervisor.with_driver([&](VirtDriver& d) { return d.find_server(id); });
  if (!server) not_found("Instance " + id + " could not be found.");
  if (server->state == ServerState::other)
    conflict("Cannot 'attach_volume' instance " + id + " while it is in neither a running, paused nor shut-off "
             "state.");
  return *server;
}

}  // namespace

std::vector<Task<Context>> AttachVolumeFlow::tasks(ComputeServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    c.server_id = server_for_attach(s, c.server_id).uuid;
    Volume v = s.volumes.get_volume(c.project, c.volume_id);  // 404 for another project's
    if (s.store.find_mapping(c.server_id, c.volume_id))
      conflict("Volume " + c.volume_id + " is already attached to instance " + c.server_id + ".");
    const std::string& zone = s.volumes.default_availability_zone();  // this host's servers'
    if (!s.cross_az_attach && v.availability_zone != zone)
      bad_request("Server and volumes are not in the same availability zone. Server is in: " + zone +
                  ". Volumes are in: " + v.availability_zone + ".");
    if (v.status != VolumeStatus::available && !(v.status == VolumeStatus::in_use && s.volumes.multiattach(v)))
      conflict("Volume " + v.id + " is " + std::string(to_string(v.status)) + "; it must be available to be attached.");
    if (!c.bus.empty() && c.bus != "scsi" && c.bus != "virtio")
      bad_request("Bus " + c.bus.substr(0, 32) + " is not one volgate offers: scsi or virtio.");
    if (!c.device.empty()) {
      auto bus = bus_of_device(c.device);
      if (!bus) bad_request("Device name " + c.device + " is not one volgate gives: /dev/sdb-/dev/sdz (scsi) or "
                            "/dev/vdb-/dev/vdz (virtio).");
      if (!c.bus.empty() && *bus != c.bus)
        bad_request("Device name " + c.device + " is on the " + *bus + " bus, not " + c.bus + ".");
      c.bus = *bus;
      if (c.device.front() != '/') c.device = "/dev/" + c.device;
    }
    if (c.bus.empty()) c.bus = "scsi";
  }, {}});

  tasks.push_back({"start_action", [&s](Context& c) {
    record_action_start(s.store, {c.request_id, c.server_id, c.project, "attach_volume", kAttachEvent});
  }, [&s](Context& c) { record_event_end(s.store, c.request_id, kAttachEvent, c.outcome.error); }});

  tasks.push_back({"reserve_device", [&s](Context& c) {
    if (c.mapping_id.empty()) c.mapping_id = new_uuid();
    if (s.store.find_mapping(c.server_id, c.volume_id)) return;  // resumed: ours is there
    std::set<std::string> used;
    for (const auto& m : s.store.mappings_of_server(c.server_id)) used.insert(m.device);
    // The server's own disks (its root, disks plugged outside volgate) take names too.
    for (bool persistent : {true, false})
      for (const auto& d : s.hypervisor.with_driver([&](VirtDriver& v) { return v.disks(c.server_id, persistent); }))
        used.insert("/dev/" + d.target);
    if (!c.device.empty() && used.count(c.device))
      conflict("The supplied device path (" + c.device + ") is in use.");
    if (c.device.empty()) {
      auto name = next_device_name(c.bus, used);
      if (!name) conflict("Instance " + c.server_id + " has no free " + c.bus + " device name left.");
      c.device = *name;
    }
    // The row reserves the name: a second attach racing this one for it is refused here.
    s.store.insert_mapping({.id = c.mapping_id, .project = c.project, .server_id = c.server_id,
                            .volume_id = c.volume_id, .device = c.device, .bus = c.bus, .tag = c.tag,
                            .delete_on_termination = c.delete_on_termination});
  }, [&s](Context& c) {
    if (auto m = s.store.find_mapping(c.server_id, c.volume_id); m && m->id == c.mapping_id)
      s.store.delete_mapping(m->id);
  }});

  tasks.push_back({"create_attachment", [&s](Context& c) {
    if (!c.attachment_id.empty()) return;
    CreateAttachmentRequest r{.project = c.project, .volume_id = c.volume_id, .instance_uuid = c.server_id};
    c.attachment_id = s.volumes.create_attachment(r).id;
  }, [&s](Context& c) {
    // A controller killed inside create_attachment made the attachment without journaling its
    // id: validate refused a volume already attached here, so this server's is ours.
    std::vector<std::string> ids;
    if (!c.attachment_id.empty()) ids.push_back(c.attachment_id);
    else
      for (const auto& a : s.volumes.attachments_of(c.volume_id))
        if (a.instance_uuid == c.server_id) ids.push_back(a.id);
    for (const auto& id : ids) {
      try {
        s.volumes.delete_attachment(c.project, id, VolumeService::AttachmentDeleter::compute);
      } catch (const ApiError& e) {
        if (e.kind != ApiError::Kind::not_found) throw;  // gone already: nothing to undo
      }
    }
  }});

  tasks.push_back({"connect", [&s](Context& c) {
    const json connector = {{"host", s.host}, {"platform", "x86_64"}, {"os_type", "linux"}, {"multipath", false}};
    Attachment a = s.volumes.update_attachment(c.project, c.attachment_id, connector.dump(), s.host);
    s.store.update_mapping(c.mapping_id, [&](BlockDeviceMapping& m) {
      m.attachment_id = a.id;
      m.connection_info = json{{"socket", s.volumes.nbd_socket()}, {"export", a.export_name}}.dump();
    });
  }, {}});  // the attachment's delete (create_attachment's revert) takes the export away

  tasks.push_back({"attach_disk", [&s](Context& c) {
    Attachment a = s.volumes.get_attachment(c.project, c.attachment_id);
    DiskRequest disk{.socket = s.volumes.nbd_socket(), .export_name = a.export_name, .serial = c.volume_id,
                     .target = std::string(target_of(c.device)), .bus = c.bus,
                     .scsi_unit = scsi_unit_of(c.device), .read_only = a.read_only};
    s.hypervisor.with_driver([&](VirtDriver& d) {
      for (const auto& existing : d.disks(c.server_id, false))
        if (existing.serial == c.volume_id) return;  // resumed: already in the guest
      d.attach_disk(c.server_id, disk);
    });
  }, [&s](Context& c) {
    // Whether or not the attach got through: a controller killed between libvirt's attach and
    // the next journal write left a disk its journal cannot tell of. Detaching a disk that is
    // not there succeeds, and validate let no other attach of this volume to this server be.
    s.hypervisor.with_driver([&](VirtDriver& d) {
      try {
        d.detach_disk(c.server_id, c.volume_id);
      } catch (const DomainNotFound&) {
        // The domain went (undefined), and its disk with it.
      }
    });
  }, /*revert_must_succeed=*/true});  // a disk left in the guest keeps its volume attaching

  tasks.push_back({"complete_attachment", [&s](Context& c) {
    s.volumes.complete_attachment(c.project, c.attachment_id);
    s.store.update_mapping(c.mapping_id, [](BlockDeviceMapping& m) { m.status = MappingStatus::attached; });
  }, {}});

  tasks.push_back({"finish_action", [&s](Context& c) { record_event_end(s.store, c.request_id, kAttachEvent, ""); },
                   {}});
  return tasks;
}

}  // namespace volgate::controller
