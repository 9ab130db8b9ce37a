#include "controller/flows/upload_volume.hpp"

#include <spdlog/spdlog.h>

#include "controller/api/api_error.hpp"
#include "controller/domain/attachment.hpp"

namespace volgate::controller {
namespace {

using Context = UploadVolumeContext;

// The status the volume's attachments give it: where an upload returns it to.
void end_uploading(FlowServices& s, const Context& c, const std::string& error) {
  if (!s.store.find_volume(c.volume_id)) return;
  s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
    if (state.volume.status != VolumeStatus::uploading) return;
    state.volume.status = status_for_attachments(state.attachments);
    state.volume.error_message = error;
  });
}

}  // namespace

std::vector<Task<Context>> UploadVolumeFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Volume v = s.get_volume(c.project, c.volume_id);
    if (v.status == VolumeStatus::in_use && !c.force)
      bad_request("Volume " + v.id + " is in-use; give force to upload an attached volume (its data is then "
                  "read while the guest may be writing it).");
    if (v.status != VolumeStatus::available && v.status != VolumeStatus::in_use)
      conflict("Volume " + v.id + " is " + std::string(to_string(v.status)) +
               "; it must be available (or in-use, with force) to be uploaded to an image.");
    if (!s.has_pool(v.pool)) throw std::runtime_error("volume " + v.id + " is in no configured pool");
    c.pool = v.pool;
    c.size_gb = v.size_gb;
    c.encrypted = v.encrypted;
  }, {}});

  tasks.push_back({"mark_uploading", [&s](Context& c) {
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      // Checked again in the row's transaction: another flow may have come first.
      require_transition("volume " + c.volume_id, v.status, VolumeStatus::uploading);
      if (v.status == VolumeStatus::in_use && !c.force)
        bad_request("Volume " + c.volume_id + " is in-use; give force to upload an attached volume.");
      v.status = VolumeStatus::uploading;
    });
    c.marked = true;  // from here on `uploading` is this flow's to undo
  }, [&s](Context& c) {
    if (!c.marked) return;
    end_uploading(s, c, c.outcome.accepted ? "upload to image " + c.image_id + " failed: " + c.outcome.error : "");
  }});

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"write_image", [&s](Context& c) {
    ImageRecord record{.id = c.image_id,
                       .name = c.image_name,
                       .disk_format = c.disk_format == "qcow2" ? ImageFormat::qcow2 : ImageFormat::raw,
                       .container_format = c.container_format,
                       .visibility = c.visibility,
                       .is_protected = c.is_protected,
                       .volume_id = c.volume_id,
                       .encrypted = c.encrypted,
                       .project = c.project};
    // An encrypted volume is read as it is stored: LUKS2, its key staying with the volume.
    auto device = s.pool(c.pool).open_volume(c.volume_id);
    s.uploads.write(*device, c.size_gb * kGiB, record, s.config.image_convert_timeout,
                    s.progress_reporter(c.volume_id), &s.stopping);
    s.clear_progress(c.volume_id);
    spdlog::info("volume {}: uploaded as image {} ({})", c.volume_id, c.image_id, c.disk_format);
  }, [&s](Context& c) {
    s.clear_progress(c.volume_id);
    s.uploads.remove(c.image_id);
  }});

  tasks.push_back({"finish", [&s](Context& c) { end_uploading(s, c, ""); }, {}});
  return tasks;
}

}  // namespace volgate::controller
