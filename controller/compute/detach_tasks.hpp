#pragma once
// The second half of a detach, shared by the detach flow (after libvirt took the disk out) and
// the release flow (the disk left without the controller): the volume begins detaching, the
// Cinder attachment is deleted (the export goes with it when nothing else on this host uses
// it), the mapping is destroyed. Each flow's context has the fields project, volume_id,
// mapping_id, attachment_id and `began` (this flow set the volume detaching).
#include "controller/api/api_error.hpp"
#include "controller/compute/compute_services.hpp"

namespace volgate::controller {

template <class Context>
Task<Context> begin_detaching_task(ComputeServices& s) {
  return {"begin_detaching", [&s](Context& c) {
    s.store.update_mapping(c.mapping_id, [](BlockDeviceMapping& m) { m.status = MappingStatus::detaching; });
    // On a multiattach volume another server keeps it in-use: only the mapping says detaching.
    if (s.volumes.get_volume(c.project, c.volume_id).status == VolumeStatus::in_use &&
        s.volumes.attachments_of(c.volume_id).size() == 1) {
      s.volumes.begin_detaching(c.project, c.volume_id);
      c.began = true;
    }
  }, [&s](Context& c) {
    if (c.began) s.volumes.roll_detaching(c.project, c.volume_id);
    try {
      s.store.update_mapping(c.mapping_id, [](BlockDeviceMapping& m) { m.status = MappingStatus::attached; });
    } catch (const ApiError&) {
      // The mapping is gone: the flow got further than this revert knows.
    }
  }};
}

template <class Context>
Task<Context> delete_attachment_task(ComputeServices& s) {
  return {"delete_attachment", [&s](Context& c) {
    if (c.attachment_id.empty()) return;
    try {
      s.volumes.delete_attachment(c.project, c.attachment_id, VolumeService::AttachmentDeleter::compute);
    } catch (const ApiError& e) {
      if (e.kind != ApiError::Kind::not_found) throw;  // gone already: done
    }
  }, {}};
}

template <class Context>
Task<Context> destroy_mapping_task(ComputeServices& s) {
  return {"destroy_mapping", [&s](Context& c) { s.store.delete_mapping(c.mapping_id); }, {}};
}

}  // namespace volgate::controller
