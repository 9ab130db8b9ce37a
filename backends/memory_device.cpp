#include "backends/memory_device.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "common/size.hpp"

namespace volgate::backends {
namespace {

std::byte* new_page() {
  void* p = std::aligned_alloc(4096, MemoryDevice::kPageSize);
  if (!p) throw std::bad_alloc();
  return static_cast<std::byte*>(p);
}

}  // namespace

MemoryDevice::MemoryDevice(uint64_t size, bool read_only)
    : size_(size),
      read_only_(read_only),
      chunk_count_((size + kPageSize * kPagesPerChunk - 1) / (kPageSize * kPagesPerChunk)) {
  if (size == 0) throw std::invalid_argument("memory size must be greater than zero");
  if (size > kMaxSize)
    throw std::invalid_argument("memory size is limited to " + format_size(kMaxSize));
  chunks_ = std::make_unique<std::atomic<Chunk*>[]>(chunk_count_);
}

MemoryDevice::~MemoryDevice() {
  for (uint64_t c = 0; c < chunk_count_; ++c) {
    Chunk* chunk = chunks_[c].load();
    if (!chunk) continue;
    for (auto& page : chunk->pages) std::free(page.load());
    delete chunk;
  }
}

DeviceCapabilities MemoryDevice::capabilities() const {
  DeviceCapabilities caps;
  caps.read_only = read_only_;
  caps.can_trim = !read_only_;
  caps.can_zero = !read_only_;
  caps.can_fast_zero = !read_only_;
  caps.can_fua = !read_only_;
  caps.can_block_status = true;
  caps.can_multi_conn = true;  // one shared memory image: nothing is cached per connection
  caps.fast_completions = true;
  caps.min_block_size = 1;
  caps.preferred_block_size = 4096;
  return caps;
}

std::string MemoryDevice::description() const { return "RAM disk"; }

std::atomic<std::byte*>& MemoryDevice::page_slot(uint64_t page_index) {
  auto& chunk_slot = chunks_[page_index / kPagesPerChunk];
  Chunk* chunk = chunk_slot.load(std::memory_order_acquire);
  if (!chunk) {
    auto fresh = std::make_unique<Chunk>();
    if (chunk_slot.compare_exchange_strong(chunk, fresh.get(), std::memory_order_acq_rel))
      chunk = fresh.release();  // we won; otherwise `chunk` now holds the winner's
  }
  return chunk->pages[page_index % kPagesPerChunk];
}

std::byte* MemoryDevice::peek_page(uint64_t page_index) const {
  Chunk* chunk = chunks_[page_index / kPagesPerChunk].load(std::memory_order_acquire);
  return chunk ? chunk->pages[page_index % kPagesPerChunk].load(std::memory_order_acquire)
               : nullptr;
}

template <class Fn>
void MemoryDevice::for_each_page(uint64_t offset, uint64_t length, Fn&& fn) {
  while (length > 0) {
    uint64_t index = offset / kPageSize;
    uint64_t in_page = offset % kPageSize;
    uint64_t bytes = std::min(length, kPageSize - in_page);
    fn(index, in_page, bytes);
    offset += bytes;
    length -= bytes;
  }
}

void MemoryDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  std::byte* out = data.data();
  for_each_page(offset, data.size(), [&](uint64_t index, uint64_t in_page, uint64_t bytes) {
    std::lock_guard lock(stripe_for(index));
    if (std::byte* page = peek_page(index))
      std::memcpy(out, page + in_page, bytes);
    else
      std::memset(out, 0, bytes);
    out += bytes;
  });
  done({});
}

void MemoryDevice::write(uint64_t offset, std::span<const std::byte> data, WriteFlags,
                         Completion done) {
  const std::byte* in = data.data();
  try {
    for_each_page(offset, data.size(), [&](uint64_t index, uint64_t in_page, uint64_t bytes) {
      std::lock_guard lock(stripe_for(index));
      auto& slot = page_slot(index);
      std::byte* page = slot.load(std::memory_order_relaxed);
      if (!page) {
        page = new_page();
        if (bytes != kPageSize) std::memset(page, 0, kPageSize);
        slot.store(page, std::memory_order_release);
        allocated_pages_.fetch_add(1, std::memory_order_relaxed);
      }
      std::memcpy(page + in_page, in, bytes);
      in += bytes;
    });
  } catch (const std::bad_alloc&) {
    return done(errno_code(ENOSPC));  // out of RAM is this device's "disk full"
  }
  done({});
}

void MemoryDevice::zero_range(uint64_t offset, uint64_t length, bool may_free,
                              bool keep_allocated) {
  for_each_page(offset, length, [&](uint64_t index, uint64_t in_page, uint64_t bytes) {
    std::lock_guard lock(stripe_for(index));
    std::byte* page = peek_page(index);
    if (!page) {
      if (!keep_allocated) return;  // a missing page already reads as zeroes
      auto& slot = page_slot(index);
      page = new_page();
      std::memset(page, 0, kPageSize);
      slot.store(page, std::memory_order_release);
      allocated_pages_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (bytes == kPageSize && may_free) {
      page_slot(index).store(nullptr, std::memory_order_release);
      std::free(page);
      allocated_pages_.fetch_sub(1, std::memory_order_relaxed);
    } else {
      std::memset(page + in_page, 0, bytes);
    }
  });
}

void MemoryDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  zero_range(offset, length, /*may_free=*/true, /*keep_allocated=*/false);
  done({});
}

void MemoryDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags,
                                Completion done) {
  try {
    zero_range(offset, length, flags.may_trim, /*keep_allocated=*/!flags.may_trim);
  } catch (const std::bad_alloc&) {
    return done(errno_code(ENOSPC));
  }
  done({});
}

void MemoryDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  std::vector<Extent> extents;
  for_each_page(offset, length, [&](uint64_t index, uint64_t, uint64_t bytes) {
    bool hole = peek_page(index) == nullptr;
    if (!extents.empty() && extents.back().hole == hole)
      extents.back().length += bytes;
    else
      extents.push_back({bytes, hole, hole});
  });
  done({}, std::move(extents));
}

}  // namespace volgate::backends
