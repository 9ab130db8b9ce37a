#pragma once
// Copying a volume into an image file (Cinder's os-volume_upload_image): the volume is
// `uploading` while its data is read, and goes back to what its attachments make it (available,
// or in-use when it was uploaded attached, with force) whether the copy worked or not. A failed
// or interrupted copy leaves no image behind (image_uploads.hpp).
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct UploadVolumeContext {
  FlowOutcome outcome;
  // From the request.
  std::string volume_id;
  std::string project;
  std::string image_id;  // new_uuid(), chosen before the flow starts (the answer names it)
  std::string image_name;
  std::string disk_format;  // raw or qcow2
  std::string container_format;
  std::string visibility;
  bool is_protected = false;
  bool force = false;  // an in-use volume may be uploaded
  // Found by the tasks.
  std::string pool;
  uint64_t size_gb = 0;
  bool encrypted = false;
  bool marked = false;  // this flow set `uploading` (and so must undo it)
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(UploadVolumeContext, outcome, volume_id, project, image_id, image_name,
                                                disk_format, container_format, visibility, is_protected, force, pool,
                                                size_gb, encrypted, marked)

struct UploadVolumeFlow {
  using Context = UploadVolumeContext;
  static constexpr const char* kind = "upload_volume";
  static constexpr const char* answer_after = "mark_uploading";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
