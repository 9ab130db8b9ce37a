// Running a program for the doctor: its output and exit code, its environment, and a bound on
// its time.
#include "controller/doctor/run_program.hpp"

#include <gtest/gtest.h>

#include <system_error>

namespace volgate::controller::doctor {
namespace {

TEST(RunProgramTest, OutputExitCodeAndEnvironment) {
  auto r = run_program({"sh", "-c", "echo out; echo err >&2; exit 3"}, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.output, "out\nerr\n");
  r = run_program({"sh", "-c", "echo $VOLGATE_DOCTOR_TEST"}, std::chrono::seconds(5), {"VOLGATE_DOCTOR_TEST=given"});
  EXPECT_EQ(r.output, "given\n");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THROW(run_program({"/nonexistent/program"}, std::chrono::seconds(5)), std::system_error);
}

TEST(RunProgramTest, AHungProgramIsKilledInTime) {
  const auto start = std::chrono::steady_clock::now();
  auto r = run_program({"sleep", "30"}, std::chrono::milliseconds(300));
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
  // One that closes its output but goes on running is bounded too.
  r = run_program({"sh", "-c", "exec >/dev/null 2>&1; sleep 30"}, std::chrono::milliseconds(300));
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace volgate::controller::doctor
