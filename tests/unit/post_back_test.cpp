#include "common/post_back.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <functional>
#include <thread>

#include "counted_allocations.hpp"

namespace volgate {
namespace {

// What a request does when another thread finishes its work: its answer is posted back to the
// io_context that issued it, which nothing else keeps running meanwhile. From a thread that
// runs no io_context, a plain post allocates every time.
TEST(PostBack, AnswersFromAForeignThreadKeepTheIoContextRunningAndAllocateNothing) {
  boost::asio::io_context io;
  PostBack back;
  constexpr int kRounds = 1000;
  std::atomic<int> handed{0};  // requests handed to the foreign thread so far
  int answered = 0;
  std::atomic<uint64_t> during{0};
  auto hand_off = [&] {
    back.expect(io);
    handed.fetch_add(1);
  };
  std::thread foreign([&] {
    const uint64_t before = allocations.load();
    for (int i = 1; i <= kRounds; ++i) {
      while (handed.load() != i) std::this_thread::yield();  // the work, done elsewhere
      back.post([&] {
        if (++answered < kRounds) hand_off();
      });
    }
    during = allocations.load() - before;
  });
  hand_off();
  io.run();  // returns once the last answer has run: only expect() kept it running until then
  foreign.join();
  EXPECT_EQ(answered, kRounds);
  EXPECT_EQ(during.load(), 0u);

  // And a plain post from there does allocate: the count can see it.
  boost::asio::io_context other;
  const uint64_t before = allocations.load();
  std::thread([&] { boost::asio::post(other, [] {}); }).join();
  EXPECT_GT(allocations.load(), before);
  other.run();
}

// The memory is free again when the handler begins: the handler may expect and post once more
// (a request handing its next piece of work off), and a handler too large for it still runs.
TEST(PostBack, TheHandlerMayPostAgainAndALargeHandlerStillRuns) {
  boost::asio::io_context io;
  PostBack back;
  int steps = 0;
  std::function<void()> step = [&] {
    if (++steps == 3) return;
    back.expect(io);
    back.post(step);
  };
  back.expect(io);
  back.post(step);
  io.run();
  EXPECT_EQ(steps, 3);

  std::array<char, 512> large{};
  large[511] = 'x';
  char seen = 0;
  io.restart();
  back.expect(io);
  back.post([large, &seen] { seen = large[511]; });
  io.run();
  EXPECT_EQ(seen, 'x');
}

}  // namespace
}  // namespace volgate
