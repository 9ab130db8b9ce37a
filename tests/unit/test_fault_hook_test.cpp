// The test-only fault hook of `volgate controller`: what its environment variables accept, and
// that a stall hook stalls only at its own task. (The kill itself is exercised against the real
// controller by tests/integration/test_attach_crash.sh.)
#include "controller/flows/test_fault_hook.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>

namespace volgate::controller {
namespace {

TEST(TestFaultHook, ParsesKindTaskAndMilliseconds) {
  TestFault kill = parse_test_fault(TestFault::Action::kill, "attach_volume:attach_disk", "V");
  EXPECT_EQ(kill.flow_kind, "attach_volume");
  EXPECT_EQ(kill.task, "attach_disk");
  EXPECT_EQ(parse_test_fault(TestFault::Action::kill, "detach_volume:end", "V").task, kAfterLastTask);
  TestFault stall = parse_test_fault(TestFault::Action::stall, "attach_volume:connect:1500", "V");
  EXPECT_EQ(stall.task, "connect");
  EXPECT_EQ(stall.stall_ms, 1500u);
}

TEST(TestFaultHook, RefusesWhatItCannotReadNamingTheVariable) {
  for (const char* bad : {"", "attach_volume", ":attach_disk", "attach_volume:", "a:b:c"})
    EXPECT_THROW(parse_test_fault(TestFault::Action::kill, bad, "V"), std::invalid_argument) << bad;
  for (const char* bad : {"a:b", "a:b:", "a:b:x", "a:b:-1", "a:b:60001", "a:b:1:2"})
    EXPECT_THROW(parse_test_fault(TestFault::Action::stall, bad, "V"), std::invalid_argument) << bad;
  try {
    parse_test_fault(TestFault::Action::kill, "oops", "VOLGATE_TEST_KILL_BEFORE");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("VOLGATE_TEST_KILL_BEFORE: expected KIND:TASK"), std::string::npos);
  }
}

TEST(TestFaultHook, StallsOnlyAtItsTask) {
  BeforeTask hook = test_fault_hook(parse_test_fault(TestFault::Action::stall, "attach_volume:connect:200", "V"));
  auto timed = [&](const char* kind, const char* task) {
    auto t0 = std::chrono::steady_clock::now();
    hook(kind, task);
    return std::chrono::steady_clock::now() - t0;
  };
  EXPECT_LT(timed("attach_volume", "attach_disk"), std::chrono::milliseconds(100));
  EXPECT_LT(timed("detach_volume", "connect"), std::chrono::milliseconds(100));
  EXPECT_GE(timed("attach_volume", "connect"), std::chrono::milliseconds(200));
}

TEST(TestFaultHook, TheEnvironmentArmsAtMostOneHook) {
  ::unsetenv("VOLGATE_TEST_KILL_BEFORE");
  ::unsetenv("VOLGATE_TEST_STALL_BEFORE");
  EXPECT_FALSE(test_fault_hook_from_environment());
  ::setenv("VOLGATE_TEST_STALL_BEFORE", "attach_volume:connect:1", 1);
  EXPECT_TRUE(test_fault_hook_from_environment());
  ::setenv("VOLGATE_TEST_KILL_BEFORE", "attach_volume:connect", 1);
  EXPECT_THROW(test_fault_hook_from_environment(), std::invalid_argument);
  ::unsetenv("VOLGATE_TEST_STALL_BEFORE");
  ::setenv("VOLGATE_TEST_KILL_BEFORE", "attach_volume", 1);
  EXPECT_THROW(test_fault_hook_from_environment(), std::invalid_argument);
  ::unsetenv("VOLGATE_TEST_KILL_BEFORE");
}

}  // namespace
}  // namespace volgate::controller
