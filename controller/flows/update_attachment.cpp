#include "controller/flows/update_attachment.hpp"

#include "controller/domain/timestamp.hpp"

namespace volgate::controller {

Attachment get_attachment(FlowServices& s, const std::string& project, const std::string& id) {
  auto a = s.store.find_attachment(id);
  if (!a || a->project != project) not_found("Attachment " + id + " could not be found.");
  return *a;
}

std::vector<Task<UpdateAttachmentContext>> UpdateAttachmentFlow::tasks(FlowServices& s) {
  using Context = UpdateAttachmentContext;
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Attachment a = get_attachment(s, c.project, c.attachment_id);
    c.volume_id = a.volume_id;
    c.step.read_only = a.read_only;
  }, {}});
  tasks.push_back(mark_attaching_task<Context>(s));
  tasks.push_back(publish_export_task<Context>(s));
  return tasks;
}

std::vector<Task<CompleteAttachmentContext>> CompleteAttachmentFlow::tasks(FlowServices& s) {
  using Context = CompleteAttachmentContext;
  std::vector<Task<Context>> tasks;
  tasks.push_back({"complete", [&s](Context& c) {
    if (c.volume_id.empty()) c.volume_id = get_attachment(s, c.project, c.attachment_id).volume_id;
    s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
      Attachment* a = find_in(state.attachments, c.attachment_id);
      if (!a) not_found("Attachment " + c.attachment_id + " could not be found.");
      if (a->status == AttachmentStatus::attached) return;
      if (a->status != AttachmentStatus::attaching)
        conflict("Attachment " + a->id + " is " + std::string(to_string(a->status)) +
                 "; only an attaching one (updated with the host's connector) can be completed.");
      a->status = AttachmentStatus::attached;
      a->attached_at = utc_timestamp();
      settle_volume_status(state);
    });
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
