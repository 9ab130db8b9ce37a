#include "crypto/crypto_workers.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace volgate::crypto {
namespace {

TEST(CryptoWorkers, EveryUnitExactlyOnce) {
  CryptoWorkers workers(3);
  for (size_t units : {1u, 2u, 3u, 4u, 5u, 7u, 256u, 1001u}) {
    std::vector<std::atomic<int>> seen(units);
    workers.run(units, [&](size_t first, size_t count) {
      for (size_t i = first; i < first + count; ++i) seen[i].fetch_add(1);
    });
    for (size_t i = 0; i < units; ++i) ASSERT_EQ(seen[i].load(), 1) << units << " units, unit " << i;
  }
}

TEST(CryptoWorkers, ExceptionsFromAnyShareReachTheCaller) {
  CryptoWorkers workers(2);
  EXPECT_THROW(workers.run(30, [](size_t first, size_t) {
    if (first > 0) throw std::runtime_error("helper share failed");
  }), std::runtime_error);
  EXPECT_THROW(workers.run(30, [](size_t first, size_t) {
    if (first == 0) throw std::runtime_error("caller share failed");
  }), std::runtime_error);
  // Still usable afterwards.
  std::atomic<size_t> total{0};
  workers.run(30, [&](size_t, size_t count) { total += count; });
  EXPECT_EQ(total.load(), 30u);
}

TEST(CryptoWorkers, SeveralCallersAtOnce) {
  CryptoWorkers workers(2);
  std::vector<std::thread> callers;
  std::atomic<size_t> total{0};
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) workers.run(64, [&](size_t, size_t count) { total += count; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4u * 200 * 64);
}

}  // namespace
}  // namespace volgate::crypto
