#pragma once
// One row of the flow journal: how far a mutating operation got, and what its tasks recorded
// (reservation ids, pool locations) so that a restarted controller can finish or revert it.
#include <cstdint>
#include <string>

namespace volgate::controller {

struct FlowRecord {
  enum class Phase { running, reverting };
  std::string id;
  std::string kind;          // e.g. "create_volume"
  std::string resource_id;   // the volume or snapshot it works on
  Phase phase = Phase::running;
  int task = 0;              // index of the task started last (or being reverted)
  std::string context;       // JSON written by the tasks
};

}  // namespace volgate::controller
