// Running a program (tgtadm, the doctor's probes): its output and exit code, its environment,
// and bounds on its time and output.
#include "common/run_program.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <system_error>

#include "common/unique_fd.hpp"

namespace volgate {
namespace {

TEST(RunProgramTest, OutputExitCodeAndEnvironment) {
  auto r = run_program({"sh", "-c", "echo out; echo err >&2; exit 3"}, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.output, "out\nerr\n");
  r = run_program({"sh", "-c", "echo $VOLGATE_DOCTOR_TEST"}, std::chrono::seconds(5), {"VOLGATE_DOCTOR_TEST=given"});
  EXPECT_EQ(r.output, "given\n");
  EXPECT_EQ(r.exit_code, 0);
  ::setenv("VOLGATE_RUN_PROGRAM_TEST", "inherited", 1);
  r = run_program({"sh", "-c", "echo ${VOLGATE_RUN_PROGRAM_TEST-unset}"}, std::chrono::seconds(5));
  EXPECT_EQ(r.output, "inherited\n");
  r = run_program({"sh", "-c", "echo ${VOLGATE_RUN_PROGRAM_TEST-unset}"}, std::chrono::seconds(5),
                  {"VOLGATE_RUN_PROGRAM_TEST"});
  EXPECT_EQ(r.output, "unset\n");
  ::unsetenv("VOLGATE_RUN_PROGRAM_TEST");
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

TEST(RunProgramTest, OutputIsBoundedAndArgumentsMayBePointers) {
  const char* argv[] = {"sh", "-c", "head -c 100000 /dev/zero; echo done >&2"};
  auto r = run_program(std::span<const char* const>(argv), std::chrono::seconds(5), {}, 4096);
  EXPECT_EQ(r.output.size(), 4096u);
  EXPECT_TRUE(r.output_truncated);
  EXPECT_EQ(r.exit_code, 0);  // read to the end, so the program finished
  r = run_program(std::span<const char* const>(argv), std::chrono::seconds(5));
  EXPECT_EQ(r.output.size(), 100005u);
  EXPECT_FALSE(r.output_truncated);
}

// A file opened here reaches the program as descriptor 3, 4, ... in the order given; the
// program sees none of this process's other (close-on-exec) descriptors.
TEST(RunProgramTest, InheritedDescriptorsArePlacedInOrder) {
  char first_name[] = "/tmp/run_program_testXXXXXX";
  char second_name[] = "/tmp/run_program_testXXXXXX";
  UniqueFd first(::mkostemp(first_name, O_CLOEXEC));
  UniqueFd second(::mkostemp(second_name, O_CLOEXEC));
  ASSERT_TRUE(first && second);
  ::unlink(first_name);
  ::unlink(second_name);
  ASSERT_EQ(::write(first.get(), "one", 3), 3);
  ASSERT_EQ(::write(second.get(), "two", 3), 3);
  ::lseek(first.get(), 0, SEEK_SET);
  ::lseek(second.get(), 0, SEEK_SET);
  UniqueFd unrelated(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  // In the other order, so that a placement overwriting the next one would show.
  const int inherited[] = {second.get(), first.get()};
  const std::string script =
      "cat /dev/fd/3 /dev/fd/4; [ -e /dev/fd/" + std::to_string(unrelated.get()) + " ] && echo leaked || echo alone";
  auto r = run_program({"sh", "-c", script}, std::chrono::seconds(5), {}, kDefaultMaxProgramOutput, inherited);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "twoonealone\n");
}

// A stopping controller does not wait for the program: it is killed soon after `cancel` is set.
TEST(RunProgramTest, ACancelledProgramIsKilledAtOnce) {
  std::atomic<bool> cancel{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cancel = true;
  });
  const auto start = std::chrono::steady_clock::now();
  auto r = run_program({"sleep", "30"}, std::chrono::seconds(60), {}, kDefaultMaxProgramOutput, {}, &cancel);
  stopper.join();
  EXPECT_TRUE(r.cancelled);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // Not set: the program runs to its end.
  cancel = false;
  r = run_program({"sh", "-c", "sleep 0.3; echo done"}, std::chrono::seconds(5), {}, kDefaultMaxProgramOutput, {}, &cancel);
  EXPECT_FALSE(r.cancelled);
  EXPECT_EQ(r.output, "done\n");
}

// Descriptors without close-on-exec (asio's sockets have none) stay here too: a program parsing
// untrusted input must not hold the API's sockets.
TEST(RunProgramTest, DescriptorsWithoutCloseOnExecStayHere) {
  UniqueFd open_everywhere(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC
  ASSERT_TRUE(open_everywhere);
  const std::string script = "[ -e /dev/fd/" + std::to_string(open_everywhere.get()) + " ] && echo leaked || echo alone";
  auto r = run_program({"sh", "-c", script}, std::chrono::seconds(5));
  EXPECT_EQ(r.output, "alone\n");
}

}  // namespace
}  // namespace volgate
