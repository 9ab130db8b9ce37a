#pragma once
// The tasks that make an attachment reachable from its host, shared by the create flow (when
// the host sends its connector at once) and the update flow: record the connector and mark the
// attachment `attaching`, then have the gateway serve the volume. Each flow's context holds an
// ExportStep named `step` and the fields attachment_id, volume_id.
#include <algorithm>
#include <string>

#include "controller/api/api_error.hpp"
#include "controller/domain/attachment.hpp"
#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct ExportStep {
  std::string connector;  // JSON text
  std::string host;
  bool read_only = false;
  std::string export_name;
  // What the attachment had before, for the revert (an update may repeat one that worked).
  std::string previous_status;
  std::string previous_connector;
  std::string previous_host;
  std::string previous_export;
  bool marked = false;
  bool published = false;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ExportStep, connector, host, read_only, export_name, previous_status,
                                                previous_connector, previous_host, previous_export, marked, published)

// The attachment `id` in `attachments`, or nullptr.
inline Attachment* find_in(std::vector<Attachment>& attachments, const std::string& id) {
  auto it = std::find_if(attachments.begin(), attachments.end(), [&](const Attachment& a) { return a.id == id; });
  return it == attachments.end() ? nullptr : &*it;
}

// Whether another attachment than `except` holds the export `name` (so it must stay).
inline bool export_held_by_other(const std::vector<Attachment>& attachments, const std::string& name,
                                 const std::string& except) {
  return std::any_of(attachments.begin(), attachments.end(), [&](const Attachment& a) {
    return a.id != except && a.export_name == name && holds_export(a);
  });
}

// The volume's status follows its attachments, unless a volume action (os-begin_detaching) or
// a flow of the volume's own has put it elsewhere.
inline void settle_volume_status(Store::VolumeAttachments& state) {
  switch (state.volume.status) {
    case VolumeStatus::available:
    case VolumeStatus::reserved:
    case VolumeStatus::attaching:
    case VolumeStatus::in_use:
    case VolumeStatus::detaching:
      state.volume.status = status_for_attachments(state.attachments);
      break;
    default:
      break;
  }
}

template <class Context>
Task<Context> mark_attaching_task(FlowServices& s) {
  return {"mark_attaching",
          [&s](Context& c) {
            if (c.step.connector.empty()) return;  // created without a connector: stays reserved
            s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
              Attachment* a = find_in(state.attachments, c.attachment_id);
              if (!a) not_found("Attachment " + c.attachment_id + " could not be found.");
              if (!c.step.marked) {
                if (a->status != AttachmentStatus::reserved && a->status != AttachmentStatus::attaching)
                  conflict("Attachment " + a->id + " is " + std::string(to_string(a->status)) +
                           "; only a reserved or attaching attachment takes a connector (delete it and create a "
                           "new one).");
                c.step.previous_status = std::string(to_string(a->status));
                c.step.previous_connector = a->connector;
                c.step.previous_host = a->host;
                c.step.previous_export = a->export_name;
              }
              c.step.export_name = export_name_for(c.volume_id, c.step.read_only);
              a->status = AttachmentStatus::attaching;
              a->connector = c.step.connector;
              a->host = c.step.host;
              a->export_name = c.step.export_name;
              settle_volume_status(state);
            });
            c.step.marked = true;
          },
          [&s](Context& c) {
            if (!c.step.marked) return;
            s.store.update_volume_attachments(c.volume_id, [&](Store::VolumeAttachments& state) {
              Attachment* a = find_in(state.attachments, c.attachment_id);
              if (!a || a->status != AttachmentStatus::attaching) return;
              a->status = parse_attachment_status(c.step.previous_status).value_or(AttachmentStatus::reserved);
              a->connector = c.step.previous_connector;
              a->host = c.step.previous_host;
              a->export_name = c.step.previous_export;
              settle_volume_status(state);
            });
          }};
}

template <class Context>
Task<Context> publish_export_task(FlowServices& s) {
  return {"publish_export",
          [&s](Context& c) {
            if (c.step.connector.empty()) return;
            Volume v = *s.store.find_volume(c.volume_id);
            c.step.published = true;  // before: a half-done publish is undone too
            s.publish_export(v, c.step.export_name, c.step.read_only);
          },
          [&s](Context& c) {
            if (!c.step.published || c.step.export_name == c.step.previous_export) return;
            if (export_held_by_other(s.store.attachments_of(c.volume_id), c.step.export_name, c.attachment_id)) return;
            s.withdraw_export(c.step.export_name);
          }};
}

}  // namespace volgate::controller
