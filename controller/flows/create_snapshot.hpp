#pragma once
// Taking a snapshot of a volume (available, or in-use with force).
#include <cstdint>
#include <string>
#include <vector>

#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct CreateSnapshotContext {
  FlowOutcome outcome;
  std::string snapshot_id;
  std::string project;
  std::string volume_id;
  std::string name;
  std::string description;
  bool force = false;
  uint64_t size_gb = 0;
  std::string pool;
  std::string reservation;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CreateSnapshotContext, outcome, snapshot_id, project, volume_id, name,
                                                description, force, size_gb, pool, reservation)

struct CreateSnapshotFlow {
  using Context = CreateSnapshotContext;
  static constexpr const char* kind = "create_snapshot";
  static constexpr const char* answer_after = "commit_quota";
  static constexpr OnRestart on_restart = OnRestart::revert;
  static std::vector<Task<Context>> tasks(FlowServices& s);
};

}  // namespace volgate::controller
