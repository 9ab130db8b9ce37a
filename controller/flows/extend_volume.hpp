#pragma once
// Growing a volume (available or in-use); it goes back to the status it had.
#include <cstdint>
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct ExtendVolumeContext {
  FlowOutcome outcome;
  std::string volume_id;
  std::string project;
  uint64_t new_size_gb = 0;
  uint64_t old_size_gb = 0;
  std::string status_before;  // the status to return to
  std::string pool;
  std::string reservation;
  bool marked = false;  // this flow set `extending` (and so must undo it)
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ExtendVolumeContext, outcome, volume_id, project, new_size_gb,
                                                old_size_gb, status_before, pool, reservation, marked)

struct ExtendVolumeFlow {
  using Context = ExtendVolumeContext;
  static constexpr const char* kind = "extend_volume";
  static constexpr const char* answer_after = "mark_extending";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
