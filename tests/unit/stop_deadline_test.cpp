#include "common/stop_deadline.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

namespace volgate {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Workers that end on their own are joined, stop or no stop.
TEST(StopDeadline, JoinsWorkersThatEnd) {
  StopDeadline deadline;
  std::thread a([&] { deadline.worker_ended(); });
  std::thread b([&] {
    std::this_thread::sleep_for(20ms);
    deadline.worker_ended();
  });
  EXPECT_EQ(deadline.join_or_leave({&a, &b}), 0u);
  EXPECT_FALSE(a.joinable());
  EXPECT_FALSE(b.joinable());
}

// A worker held by storage that never answers is left running once the deadline passes; the
// one that ended is joined. The wait lasts the deadline, not longer.
TEST(StopDeadline, LeavesAWorkerThatDoesNotEndByTheDeadline) {
  // Outlives the detached thread, which reports its end only after the test let it go.
  auto deadline = std::make_shared<StopDeadline>();
  std::promise<void> storage_answers;
  std::shared_future<void> answered = storage_answers.get_future().share();
  std::promise<void> stuck_ended;
  std::future<void> stuck_done = stuck_ended.get_future();
  std::thread ends([deadline] { deadline->worker_ended(); });
  std::thread stuck([deadline, answered, &stuck_ended] {
    answered.wait();
    deadline->worker_ended();
    stuck_ended.set_value();
  });

  const auto began = Clock::now();
  deadline->begin(200ms);
  deadline->begin(10s);  // only the first call counts
  EXPECT_EQ(deadline->join_or_leave({&ends, &stuck}), 1u);
  const auto waited = Clock::now() - began;
  EXPECT_GE(waited, 190ms);
  EXPECT_LT(waited, 2s);
  EXPECT_FALSE(ends.joinable());   // joined
  EXPECT_FALSE(stuck.joinable());  // detached

  storage_answers.set_value();
  EXPECT_EQ(stuck_done.wait_for(5s), std::future_status::ready);
}

// A thread never started does not hold the wait (a front end stopped before it started).
TEST(StopDeadline, ThreadsNeverStartedCountAsEnded) {
  StopDeadline deadline;
  std::thread never;
  EXPECT_EQ(deadline.join_or_leave({&never}), 0u);
}

// Before the stop begins there is no deadline: the wait goes on until the workers end.
TEST(StopDeadline, WaitsForTheStopToBegin) {
  StopDeadline deadline;
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    while (!stop.load()) std::this_thread::sleep_for(1ms);
    deadline.worker_ended();
  });
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    deadline.begin(5s);
    stop = true;
  });
  const auto began = Clock::now();
  EXPECT_EQ(deadline.join_or_leave({&worker}), 0u);
  EXPECT_GE(Clock::now() - began, 90ms);
  stopper.join();
}

}  // namespace
}  // namespace volgate
