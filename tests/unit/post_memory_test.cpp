#include "common/post_memory.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <functional>
#include <thread>

#include "counted_allocations.hpp"

namespace volgate {
namespace {

// What a request does when another thread finishes its work: post its completion back to the
// io_context that issued it. From a thread that runs no io_context that allocated every time.
TEST(PostMemory, APostFromAForeignThreadAllocatesNothing) {
  boost::asio::io_context io;
  auto busy = boost::asio::make_work_guard(io);
  PostMemory memory;
  std::atomic<int> ran{0};
  std::atomic<uint64_t> during{0};
  constexpr int kPosts = 1000;
  std::thread foreign([&] {
    const uint64_t before = allocations.load();
    for (int i = 0; i < kPosts; ++i) {
      while (ran.load() != i) std::this_thread::yield();  // one post at a time
      memory.post(io, [&ran] { ran.fetch_add(1); });
    }
    during = allocations.load() - before;
    while (ran.load() != kPosts) std::this_thread::yield();
    busy.reset();
  });
  io.run();
  foreign.join();
  EXPECT_EQ(ran.load(), kPosts);
  EXPECT_EQ(during.load(), 0u);

  // And a plain post from there does allocate: the count can see it.
  boost::asio::io_context other;
  const uint64_t before = allocations.load();
  std::thread([&] { boost::asio::post(other, [] {}); }).join();
  EXPECT_GT(allocations.load(), before);
  other.run();
}

// The memory is free again when the handler begins: the handler may post once more (a request
// handing the next piece of work off), and a handler too large for it still runs.
TEST(PostMemory, TheHandlerMayPostAgainAndALargeHandlerStillRuns) {
  boost::asio::io_context io;
  PostMemory memory;
  int steps = 0;
  std::function<void()> step = [&] {
    if (++steps < 3) memory.post(io, step);
  };
  memory.post(io, step);
  io.run();
  EXPECT_EQ(steps, 3);

  std::array<char, 512> large{};
  large[511] = 'x';
  char seen = 0;
  io.restart();
  memory.post(io, [large, &seen] { seen = large[511]; });
  io.run();
  EXPECT_EQ(seen, 'x');
}

}  // namespace
}  // namespace volgate
