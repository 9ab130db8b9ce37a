#include "common/thread_counters.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/latency_buckets.hpp"

namespace volgate {
namespace {

TEST(ThreadCounters, SumsWhatEveryThreadAdded) {
  ThreadCounters<3> counters;
  constexpr int kThreads = 8, kAdds = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      auto& slot = counters.this_thread_slot();
      for (int i = 0; i < kAdds; ++i) {
        slot.add(0);
        counters.add(1, 2);
      }
    });
  // A reader while they add: never more than the end result.
  for (int i = 0; i < 100; ++i) EXPECT_LE(counters.sum(0), uint64_t{kThreads} * kAdds);
  for (auto& t : threads) t.join();
  EXPECT_EQ(counters.sum(0), uint64_t{kThreads} * kAdds);
  const auto sums = counters.sums();
  EXPECT_EQ(sums[1], uint64_t{kThreads} * kAdds * 2);
  EXPECT_EQ(sums[2], 0u);
}

TEST(ThreadCounters, ThreadsBeyondTheSingleWriterSlotsShareOneAndLoseNothing) {
  ThreadCounters<1> counters;
  // Each thread takes a new index for good: enough of them run past the single-writer slots.
  constexpr size_t kThreads = ThreadCounters<1>::kSingleWriterSlots + 40;
  for (size_t batch = 0; batch < kThreads; batch += 20) {
    std::vector<std::thread> threads;
    for (size_t t = 0; t < 20; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) counters.add(0);
      });
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(counters.sum(0), ((kThreads + 19) / 20) * 20 * 1000);
}

TEST(LatencyBuckets, ObservationGoesToTheFirstBoundAtOrAboveIt) {
  EXPECT_EQ(latency_bucket(0), 0u);
  EXPECT_EQ(latency_bucket(25'000), 0u);
  EXPECT_EQ(latency_bucket(25'001), 1u);
  EXPECT_EQ(latency_bucket(1'000'000), 5u);
  EXPECT_EQ(latency_bucket(10'000'000'000), kLatencyBuckets - 2);
  EXPECT_EQ(latency_bucket(10'000'000'001), kLatencyBuckets - 1);  // +Inf
}

}  // namespace
}  // namespace volgate
