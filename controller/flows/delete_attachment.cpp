#include "controller/flows/delete_attachment.hpp"

#include "controller/flows/update_attachment.hpp"

namespace volgate::controller {

std::vector<Task<DeleteAttachmentContext>> DeleteAttachmentFlow::tasks(FlowServices& s) {
  using Context = DeleteAttachmentContext;
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    if (c.outcome.accepted) return;  // resumed after a restart: the record may be gone already
    Attachment a = get_attachment(s, c.project, c.attachment_id);
    c.volume_id = a.volume_id;
    c.export_name = a.export_name;
  }, {}});

  tasks.push_back({"mark_detaching", [&s](Context& c) {
    s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
      Attachment* a = find_in(state.attachments, c.attachment_id);
      if (!a) return;
      a->status = AttachmentStatus::detaching;
      settle_volume_status(state);
    });
  }, {}});

  tasks.push_back({"withdraw_export", [&s](Context& c) {
    if (c.export_name.empty()) return;
    if (export_held_by_other(s.store.attachments_of(c.volume_id), c.export_name, c.attachment_id)) return;
    s.withdraw_export(c.export_name);
  }, {}});

  tasks.push_back({"delete_record", [&s](Context& c) {
    if (!s.store.find_volume(c.volume_id)) return;
    s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
      std::erase_if(state.attachments, [&](const Attachment& a) { return a.id == c.attachment_id; });
      settle_volume_status(state);
    });
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
