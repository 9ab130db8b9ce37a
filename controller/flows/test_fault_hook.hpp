#pragma once
// Fault injection for the integration tests, set through the environment of `volgate
// controller` (read once at its start; see tests/integration/README.md):
//   VOLGATE_TEST_KILL_BEFORE=KIND:TASK        SIGKILL the controller just before that task of
//                                             the flow KIND runs (its journal row is written)
//   VOLGATE_TEST_STALL_BEFORE=KIND:TASK:MS    sleep MS milliseconds (at most 60000) there
// TASK "end" is the point after the last task, before the journal row is cleared. A test kills
// the controller at a named step to prove the restart recovers from it, or stalls it to act on
// the host (lock the database, stop a daemon) at a known point of a flow. Unset: no hook.
#include <string>
#include <string_view>

#include "controller/flows/flow.hpp"

namespace volgate::controller {

struct TestFault {
  enum class Action { kill, stall };
  Action action = Action::kill;
  std::string flow_kind;
  std::string task;  // kAfterLastTask for "end"
  unsigned stall_ms = 0;
};

// Parses KIND:TASK (kill) or KIND:TASK:MS (stall). Throws std::invalid_argument naming `what`.
TestFault parse_test_fault(TestFault::Action action, std::string_view spec, const std::string& what);

// The hook the environment asks for (nothing when neither variable is set). Throws
// std::invalid_argument for a malformed value, so a test's typo stops the controller at start.
BeforeTask test_fault_hook_from_environment();

// The hook for one fault: kills or stalls when `fault`'s flow reaches its task.
BeforeTask test_fault_hook(const TestFault& fault);

}  // namespace volgate::controller
