#pragma once
// Cinder's attachment create: reserves the volume for an instance (`available` -> `reserved`,
// or beside the other attachments of a multiattach volume); with the host's connector it goes
// on to make the volume reachable (see attachment_tasks.hpp). The caller is answered when all
// is done: everything runs on the request's thread.
#include <string>
#include <vector>

#include "controller/flows/attachment_tasks.hpp"

namespace volgate::controller {

struct CreateAttachmentContext {
  FlowOutcome outcome;
  std::string attachment_id;
  std::string project;
  std::string volume_id;
  std::string instance_uuid;
  ExportStep step;  // its connector is empty when none was given
  bool reserved = false;  // this flow added the attachment (and so must remove it)
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CreateAttachmentContext, outcome, attachment_id, project, volume_id,
                                                instance_uuid, step, reserved)

struct CreateAttachmentFlow {
  using Context = CreateAttachmentContext;
  static constexpr const char* kind = "create_attachment";
  static constexpr const char* answer_after = "publish_export";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

// Whether the volume's type lets it be attached more than once (extra spec "multiattach":
// "<is> True", as Cinder writes it).
bool multiattach_allowed(const FlowServices& s, const Volume& volume);

}  // namespace volgate::controller
