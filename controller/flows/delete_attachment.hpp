#pragma once
// Cinder's attachment delete (and os-force_detach): the attachment goes `detaching`, the gateway
// stops serving the volume when no other attachment on this host uses its export, the record
// goes, and the volume returns to `available` (or stays `in-use` for its other attachments).
// A restarted controller finishes a half-done delete: the host has already let the volume go.
#include <string>
#include <vector>

#include "controller/flows/attachment_tasks.hpp"

namespace volgate::controller {

struct DeleteAttachmentContext {
  FlowOutcome outcome;
  std::string attachment_id;
  std::string project;
  std::string volume_id;
  std::string export_name;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DeleteAttachmentContext, outcome, attachment_id, project, volume_id,
                                                export_name)

struct DeleteAttachmentFlow {
  using Context = DeleteAttachmentContext;
  static constexpr const char* kind = "delete_attachment";
  static constexpr const char* answer_after = "delete_record";
  static constexpr OnRestart on_restart = OnRestart::resume;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
