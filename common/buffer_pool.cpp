#include "common/buffer_pool.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

namespace volgate {
namespace {

constexpr unsigned kMinShift = std::countr_zero(Buffer::kMinClassSize);
constexpr unsigned kClassCount = std::countr_zero(Buffer::kMaxSize) - kMinShift + 1;

std::atomic<size_t> bytes_held{0};

size_t class_bytes(unsigned size_class) { return Buffer::kMinClassSize << size_class; }

unsigned class_for(size_t size) {
  if (size <= Buffer::kMinClassSize) return 0;
  return static_cast<unsigned>(std::bit_width(size - 1)) - kMinShift;
}

std::byte* system_allocate(unsigned size_class) {
  void* p = std::aligned_alloc(Buffer::kAlignment, class_bytes(size_class));
  if (!p) throw std::bad_alloc();
  bytes_held.fetch_add(class_bytes(size_class), std::memory_order_relaxed);
  return static_cast<std::byte*>(p);
}

void system_free(std::byte* p, unsigned size_class) {
  std::free(p);
  bytes_held.fetch_sub(class_bytes(size_class), std::memory_order_relaxed);
}

// One per thread. Buffers may be freed on another thread than the one that allocated them; they
// simply join the freeing thread's cache.
struct ThreadPool {
  std::array<std::vector<std::byte*>, kClassCount> free_lists;
  size_t cached_bytes = 0;

  ~ThreadPool() {
    for (unsigned c = 0; c < kClassCount; ++c)
      for (std::byte* p : free_lists[c]) system_free(p, c);
    alive = false;
  }

  std::byte* take(unsigned size_class) {
    auto& list = free_lists[size_class];
    if (list.empty()) return system_allocate(size_class);
    std::byte* p = list.back();
    list.pop_back();
    cached_bytes -= class_bytes(size_class);
    return p;
  }

  void give(std::byte* p, unsigned size_class) {
    if (cached_bytes + class_bytes(size_class) > Buffer::kMaxCachedBytes) {
      system_free(p, size_class);
      return;
    }
    free_lists[size_class].push_back(p);
    cached_bytes += class_bytes(size_class);
  }

  // Set false once the thread's pool is destroyed, so buffers released during thread teardown
  // go straight back to the system.
  static thread_local bool alive;
};

thread_local bool ThreadPool::alive = true;
thread_local ThreadPool this_thread_pool;

}  // namespace

Buffer Buffer::allocate(size_t size) {
  if (size > kMaxSize) throw std::length_error("buffer larger than the pool's maximum");
  unsigned size_class = class_for(size);
  std::byte* p = ThreadPool::alive ? this_thread_pool.take(size_class) : system_allocate(size_class);
  return Buffer(p, size, static_cast<uint8_t>(size_class));
}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      size_class_(other.size_class_) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    size_class_ = other.size_class_;
  }
  return *this;
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
  if (!data_) return;
  if (ThreadPool::alive)
    this_thread_pool.give(data_, size_class_);
  else
    system_free(data_, size_class_);
  data_ = nullptr;
  size_ = 0;
}

size_t buffer_pool_bytes_held() { return bytes_held.load(std::memory_order_relaxed); }

}  // namespace volgate
