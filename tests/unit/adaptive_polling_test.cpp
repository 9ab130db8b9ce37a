#include "common/adaptive_polling.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <thread>

using namespace std::chrono_literals;
using volgate::PollWindow;

TEST(PollWindow, StartsClosedAndGrowsWhileEventsComeSoon) {
  PollWindow w(50us);
  EXPECT_EQ(w.current(), 0us);
  w.slept(90us);  // the thread's own wake-up is part of this: still within reach
  EXPECT_EQ(w.current(), PollWindow::kFirstWindow);
  w.slept(30us);
  EXPECT_EQ(w.current(), 2 * PollWindow::kFirstWindow);
  for (int i = 0; i < 10; ++i) w.slept(1us);
  EXPECT_EQ(w.current(), 50us);  // capped at the maximum
}

TEST(PollWindow, OneSlowReplyDoesNotShrinkIt) {
  PollWindow w(64us);
  for (int i = 0; i < 10; ++i) w.slept(1us);
  ASSERT_EQ(w.current(), 64us);
  for (int i = 1; i < PollWindow::kLongSleepsBeforeShrink; ++i) w.slept(1ms);
  EXPECT_EQ(w.current(), 64us);
  w.slept(1ms);  // one too many in a row
  EXPECT_EQ(w.current(), 32us);
  w.slept(10us);  // within reach again: grows back, and the run of long sleeps starts over
  EXPECT_EQ(w.current(), 64us);
  for (int i = 1; i < PollWindow::kLongSleepsBeforeShrink; ++i) w.slept(1ms);
  EXPECT_EQ(w.current(), 64us);
}

TEST(PollWindow, ShrinksToZeroWhenEventsKeepComingLate) {
  PollWindow w(64us);
  for (int i = 0; i < 10; ++i) w.slept(1us);
  for (int i = 0; i < 100 && w.current() > 0us; ++i) w.slept(1ms);
  EXPECT_EQ(w.current(), 0us);
}

TEST(PollWindow, ZeroMaximumNeverPolls) {
  PollWindow w(0us);
  for (int i = 0; i < 10; ++i) w.slept(0us);
  EXPECT_EQ(w.current(), 0us);
}

// Handlers posted from another thread, quickly (while the loop polls) and slowly (after it
// went to sleep), all run, and the loop returns once the io_context has no work left; the
// same with polling switched off by worth_polling.
void run_fed_from_another_thread(bool worth_polling) {
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::atomic<int> ran = 0;
  std::thread feeder([&] {
    for (int i = 0; i < 200; ++i) {
      boost::asio::post(io, [&] { ++ran; });
      std::this_thread::sleep_for(i % 20 == 0 ? 2ms : 5us);
    }
    boost::asio::post(io, [&] { work.reset(); });
  });
  boost::asio::steady_timer timer(io, 1ms);
  bool timer_fired = false;
  timer.async_wait([&](auto) { timer_fired = true; });
  int asked = 0;
  volgate::run_with_adaptive_polling(io, 50us, [&] {
    ++asked;
    return worth_polling;
  });
  feeder.join();
  EXPECT_EQ(ran, 200);
  EXPECT_TRUE(timer_fired);
  EXPECT_TRUE(io.stopped());
  EXPECT_GT(asked, 0);
}

TEST(RunWithAdaptivePolling, RunsEveryHandlerAndReturnsWhenWorkEnds) { run_fed_from_another_thread(true); }

TEST(RunWithAdaptivePolling, SameWhenNotWorthPolling) { run_fed_from_another_thread(false); }
