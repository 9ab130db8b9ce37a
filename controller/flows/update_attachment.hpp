#pragma once
// Cinder's attachment update: the host sends its connector, the gateway serves the volume, and
// the answer carries the connection info the host uses to reach it. Runs whole on the
// request's thread.
#include <string>
#include <vector>

#include "controller/flows/attachment_tasks.hpp"

namespace volgate::controller {

struct UpdateAttachmentContext {
  FlowOutcome outcome;
  std::string attachment_id;
  std::string project;
  std::string volume_id;
  ExportStep step;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(UpdateAttachmentContext, outcome, attachment_id, project, volume_id,
                                                step)

struct UpdateAttachmentFlow {
  using Context = UpdateAttachmentContext;
  static constexpr const char* kind = "update_attachment";
  static constexpr const char* answer_after = "publish_export";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

// Cinder's attachment complete: the host has attached the disk (`attaching` -> `attached`, the
// volume `in-use`). One task; repeating it is harmless.
struct CompleteAttachmentContext {
  FlowOutcome outcome;
  std::string attachment_id;
  std::string project;
  std::string volume_id;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CompleteAttachmentContext, outcome, attachment_id, project, volume_id)

struct CompleteAttachmentFlow {
  using Context = CompleteAttachmentContext;
  static constexpr const char* kind = "complete_attachment";
  static constexpr const char* answer_after = "complete";
  static constexpr OnRestart on_restart = OnRestart::resume;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

// The project's attachment; 404 (ApiError) when it is missing or another project's.
Attachment get_attachment(FlowServices& s, const std::string& project, const std::string& id);

}  // namespace volgate::controller
