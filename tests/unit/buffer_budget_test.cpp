#include "nbd/buffer_budget.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

using volgate::nbd::BufferBudget;

namespace {

struct CountingWaiter : BufferBudget::Waiter {
  CountingWaiter() : Waiter([this] { ++told; }) {}
  int told = 0;
};

}  // namespace

TEST(BufferBudget, TakesWhatFitsAndNoMore) {
  BufferBudget budget(100);
  EXPECT_TRUE(budget.try_take(60));
  EXPECT_TRUE(budget.try_take(40));
  EXPECT_FALSE(budget.try_take(1));
  EXPECT_EQ(budget.used(), 100u);
  budget.release(30);
  EXPECT_FALSE(budget.try_take(31));
  EXPECT_TRUE(budget.try_take(30));
  budget.release(100);
  EXPECT_EQ(budget.used(), 0u);
}

TEST(BufferBudget, TakeAnywayGoesPastTheLimitAndCounts) {
  BufferBudget budget(100);
  ASSERT_TRUE(budget.try_take(90));
  budget.take_anyway(50);  // a connection holding nothing gets its one request
  EXPECT_EQ(budget.used(), 140u);
  EXPECT_FALSE(budget.try_take(1));
  budget.release(90);
  EXPECT_FALSE(budget.try_take(51));  // only 50 free again
  EXPECT_TRUE(budget.try_take(50));
}

TEST(BufferBudget, WaiterIsToldOnceItsWantFits) {
  BufferBudget budget(100);
  ASSERT_TRUE(budget.try_take(100));
  CountingWaiter waiter;
  EXPECT_FALSE(budget.take_or_wait(40, waiter));
  budget.release(20);  // 20 free: not enough
  EXPECT_EQ(waiter.told, 0);
  budget.release(20);  // 40 free
  EXPECT_EQ(waiter.told, 1);
  budget.release(10);  // told already, and out of the queue
  EXPECT_EQ(waiter.told, 1);
  EXPECT_TRUE(budget.take_or_wait(40, waiter));
  EXPECT_EQ(budget.used(), 90u);
}

TEST(BufferBudget, TakeOrWaitTakesAtOnceWhenItFits) {
  BufferBudget budget(100);
  CountingWaiter waiter;
  EXPECT_TRUE(budget.take_or_wait(70, waiter));
  budget.release(70);
  EXPECT_EQ(waiter.told, 0);  // it was never queued
}

TEST(BufferBudget, LargeWantDoesNotHoldBackSmallOnes) {
  BufferBudget budget(100);
  ASSERT_TRUE(budget.try_take(100));
  CountingWaiter large, small;
  EXPECT_FALSE(budget.take_or_wait(80, large));
  EXPECT_FALSE(budget.take_or_wait(10, small));
  budget.release(10);
  EXPECT_EQ(large.told, 0);
  EXPECT_EQ(small.told, 1);
  EXPECT_TRUE(budget.take_or_wait(10, small));
  budget.release(80);
  EXPECT_EQ(large.told, 1);
}

TEST(BufferBudget, ReleaseTellsOnlyAsManyAsFit) {
  BufferBudget budget(100);
  ASSERT_TRUE(budget.try_take(100));
  CountingWaiter a, b, c;
  EXPECT_FALSE(budget.take_or_wait(30, a));
  EXPECT_FALSE(budget.take_or_wait(30, b));
  EXPECT_FALSE(budget.take_or_wait(30, c));
  budget.release(60);
  EXPECT_EQ(a.told, 1);
  EXPECT_EQ(b.told, 1);
  EXPECT_EQ(c.told, 0);  // oldest first
}

TEST(BufferBudget, CancelledWaiterIsNotTold) {
  BufferBudget budget(100);
  ASSERT_TRUE(budget.try_take(100));
  CountingWaiter gone, next;
  EXPECT_FALSE(budget.take_or_wait(50, gone));
  EXPECT_FALSE(budget.take_or_wait(50, next));
  budget.cancel_wait(gone);
  budget.cancel_wait(gone);  // twice is harmless
  budget.release(50);
  EXPECT_EQ(gone.told, 0);
  EXPECT_EQ(next.told, 1);
}

// Threads that each take, hold briefly and release, waiting on the budget when it is spent:
// every waiter is woken eventually (no release slips between a failed take and the queueing),
// and everything taken comes back.
TEST(BufferBudget, NoWakeUpIsLostAcrossThreads) {
  constexpr size_t kLimit = 64;
  constexpr int kThreads = 8;
  constexpr int kRounds = 2000;
  BufferBudget budget(kLimit);

  struct ThreadWaiter : BufferBudget::Waiter {
    ThreadWaiter() : Waiter([this] {
      std::lock_guard lock(mutex);
      told = true;
      cv.notify_one();
    }) {}
    std::mutex mutex;
    std::condition_variable cv;
    bool told = false;
  };

  std::atomic<int> stuck{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ThreadWaiter waiter;
      const size_t want = 8 + static_cast<size_t>(t) * 3;  // 8..29: at most a few fit at once
      for (int round = 0; round < kRounds; ++round) {
        while (!budget.try_take(want)) {
          {
            std::lock_guard lock(waiter.mutex);
            waiter.told = false;
          }
          if (budget.take_or_wait(want, waiter)) break;
          std::unique_lock lock(waiter.mutex);
          if (!waiter.cv.wait_for(lock, std::chrono::seconds(10), [&] { return waiter.told; })) {
            ++stuck;
            lock.unlock();
            budget.cancel_wait(waiter);
            return;
          }
        }
        std::this_thread::yield();
        budget.release(want);
      }
      budget.cancel_wait(waiter);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(stuck.load(), 0);
  EXPECT_EQ(budget.used(), 0u);
}
