#include "common/buffer_pool.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

using volgate::Buffer;
using volgate::buffer_pool_bytes_held;

TEST(BufferPool, AlignedAndSized) {
  for (size_t size : {size_t{1}, size_t{4096}, size_t{4097}, size_t{1} << 20, size_t{32} << 20}) {
    Buffer b = Buffer::allocate(size);
    EXPECT_EQ(b.size(), size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % Buffer::kAlignment, 0u);
  }
}

TEST(BufferPool, RecyclesWithoutGrowth) {
  { Buffer warm = Buffer::allocate(1 << 20); }
  size_t held = buffer_pool_bytes_held();
  for (int i = 0; i < 1000; ++i) {
    Buffer b = Buffer::allocate(1 << 20);
    b.data()[0] = std::byte{1};
  }
  EXPECT_EQ(buffer_pool_bytes_held(), held);
}

TEST(BufferPool, CacheIsBounded) {
  std::vector<Buffer> many;
  for (int i = 0; i < 16; ++i) many.push_back(Buffer::allocate(16 << 20));  // 256 MiB in use
  size_t in_use = buffer_pool_bytes_held();
  many.clear();
  // Only kMaxCachedBytes may stay cached once everything is released.
  EXPECT_LE(buffer_pool_bytes_held(), in_use - (256u << 20) + Buffer::kMaxCachedBytes);
}

TEST(BufferPool, MoveTransfersOwnership) {
  Buffer a = Buffer::allocate(100);
  std::byte* p = a.data();
  Buffer b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(a.size(), 0u);
}

TEST(BufferPool, FreedOnAnotherThread) {
  Buffer b = Buffer::allocate(8192);
  const std::byte* p = b.data();
  const size_t held = buffer_pool_bytes_held();
  const std::byte* reused = nullptr;
  size_t held_while_cached = 0;
  std::thread t([&, buffer = std::move(b)]() mutable {
    buffer = Buffer();  // joins this thread's cache: still held, not returned to the system
    held_while_cached = buffer_pool_bytes_held();
    reused = Buffer::allocate(8000).data();  // same size class: served from that cache
  });
  t.join();
  EXPECT_EQ(held_while_cached, held);
  EXPECT_EQ(reused, p);
  // The thread's cache went back to the system when the thread ended: nothing leaked.
  EXPECT_EQ(buffer_pool_bytes_held(), held - 8192);
}

TEST(BufferPool, RefusesOversize) {
  EXPECT_THROW(Buffer::allocate(Buffer::kMaxSize + 1), std::length_error);
}
