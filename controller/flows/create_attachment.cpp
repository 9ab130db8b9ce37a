#include "controller/flows/create_attachment.hpp"

#include <algorithm>

namespace volgate::controller {
namespace {

using Context = CreateAttachmentContext;

// Refuses a volume that cannot take one more attachment, with Cinder's reasons.
void check_attachable(const FlowServices& s, const Volume& v, const std::vector<Attachment>& attachments) {
  const bool multiattach = multiattach_allowed(s, v);
  if (!attachments.empty() && !multiattach)
    conflict("Volume " + v.id + " is already attached (attachment " + attachments.front().id +
             ") and its type '" + v.volume_type + "' does not allow multiattach.");
  switch (v.status) {
    case VolumeStatus::available:
      return;
    case VolumeStatus::reserved:  // os-reserve'd, or reserved by another attachment (multiattach)
    case VolumeStatus::attaching:
    case VolumeStatus::in_use:
      if (attachments.empty() ? v.status == VolumeStatus::reserved : multiattach) return;
      break;
    default:
      break;
  }
  conflict("Volume " + v.id + " is " + std::string(to_string(v.status)) +
           "; it must be available (or in-use with a multiattach type) to be attached.");
}

}  // namespace

bool multiattach_allowed(const FlowServices& s, const Volume& volume) {
  auto type = s.config.volume_types.find(volume.volume_type);
  if (type == s.config.volume_types.end()) return false;
  auto spec = type->second.extra_specs.find("multiattach");
  if (spec == type->second.extra_specs.end()) return false;
  std::string value = spec->second;
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return value == "<is> true" || value == "true";
}

std::vector<Task<Context>> CreateAttachmentFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Volume v = s.get_volume(c.project, c.volume_id);
    check_attachable(s, v, s.store.attachments_of(v.id));
  }, {}});

  tasks.push_back({"reserve", [&s](Context& c) {
    s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
      if (find_in(state.attachments, c.attachment_id)) return;  // resumed: already there
      // Checked again inside the transaction: a racing attach may have come first.
      check_attachable(s, state.volume, state.attachments);
      Attachment a;
      a.id = c.attachment_id;
      a.project = c.project;
      a.volume_id = c.volume_id;
      a.instance_uuid = c.instance_uuid;
      a.read_only = c.step.read_only;
      state.attachments.push_back(a);
      settle_volume_status(state);
    });
    c.reserved = true;
  }, [&s](Context& c) {
    if (!c.reserved || !s.store.find_volume(c.volume_id)) return;
    s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
      std::erase_if(state.attachments, [&](const Attachment& a) { return a.id == c.attachment_id; });
      settle_volume_status(state);
    });
  }});

  tasks.push_back(mark_attaching_task<Context>(s));
  tasks.push_back(publish_export_task<Context>(s));
  return tasks;
}

}  // namespace volgate::controller
