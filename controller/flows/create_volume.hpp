#pragma once
// Creating a volume: blank, or a copy of a snapshot, a volume or an image file (raw, or qcow2
// converted by qemu-img); encrypted or not.
#include <cstdint>
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct CreateVolumeContext {
  FlowOutcome outcome;
  // From the request.
  std::string volume_id;
  std::string project;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;            // 0: the source's
  std::string volume_type;         // empty: the default type
  std::string availability_zone;   // empty: the source's or the default zone
  std::string snapshot_id;         // at most one source
  std::string source_volid;
  std::string image;
  Metadata metadata;
  bool encryption_asked = false;   // the request said whether to encrypt...
  bool encryption_wanted = false;  // ...and this is what it said
  // Found by the tasks.
  bool encrypted = false;
  std::string only_pool;     // a copy stays in its source's pool
  std::string key_source;    // the volume whose passphrase a copy keeps
  std::string image_handle;  // the image file validate opened (FlowServices::hold_image)
  std::string image_format;  // "raw" or "qcow2", from the file's first bytes
  int64_t image_changed_ns = 0;  // the image file's ctime when validate inspected it
  std::string reservation;
  std::string pool;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CreateVolumeContext, outcome, volume_id, project, name, description,
                                                size_gb, volume_type, availability_zone, snapshot_id, source_volid,
                                                image, metadata, encryption_asked, encryption_wanted, encrypted, only_pool,
                                                key_source, image_handle, image_format, image_changed_ns, reservation,
                                                pool)

struct CreateVolumeFlow {
  using Context = CreateVolumeContext;
  static constexpr const char* kind = "create_volume";
  // Bad input, an illegal state or a quota limit is the caller's error; after this the
  // volume exists (`creating`) and a failure shows as `error`.
  static constexpr const char* answer_after = "commit_quota";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
