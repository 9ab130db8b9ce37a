#include "controller/compute/release_volume.hpp"

#include "controller/api/api_error.hpp"

namespace volgate::controller {

std::vector<Task<ReleaseVolumeContext>> ReleaseVolumeFlow::tasks(ComputeServices& s) {
  using Context = ReleaseVolumeContext;
  std::vector<Task<Context>> tasks;
  tasks.push_back({"begin_detaching", [&s](Context& c) {
    s.store.update_mapping(c.mapping_id, [](BlockDeviceMapping& m) { m.status = MappingStatus::detaching; });
    // On a multiattach volume another server keeps it in-use.
    if (s.volumes.get_volume(c.project, c.volume_id).status == VolumeStatus::in_use &&
        s.volumes.attachments_of(c.volume_id).size() == 1) {
      s.volumes.begin_detaching(c.project, c.volume_id);
      c.began = true;
    }
  }, [&s](Context& c) {
    // Put back as it was: the next reconcile (an event, a reconnection, a restart) tries again.
    if (c.began) s.volumes.roll_detaching(c.project, c.volume_id);
    try {
      s.store.update_mapping(c.mapping_id, [](BlockDeviceMapping& m) { m.status = MappingStatus::attached; });
    } catch (const ApiError&) {
      // The mapping is gone: the release got further than this revert knows.
    }
  }});

  tasks.push_back({"delete_attachment", [&s](Context& c) {
    if (c.attachment_id.empty()) return;
    try {
      s.volumes.delete_attachment(c.project, c.attachment_id);
    } catch (const ApiError& e) {
      if (e.kind != ApiError::Kind::not_found) throw;
    }
  }, {}});

  tasks.push_back({"destroy_mapping", [&s](Context& c) { s.store.delete_mapping(c.mapping_id); }, {}});
  return tasks;
}

}  // namespace volgate::controller
