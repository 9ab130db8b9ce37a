#pragma once
// A sparse RAM disk. Memory is taken in 64 KiB pages on first write and given back when a trim
// or a zeroing covers a whole page, so an empty 1 TiB device costs almost nothing.
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "backends/block_device.hpp"

namespace volgate::backends {

class MemoryDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kPageSize = 64 * 1024;
  static constexpr uint64_t kMaxSize = uint64_t{1} << 46;  // 64 TiB: keeps the page directory small

  // Throws std::invalid_argument for a size of zero or above kMaxSize.
  MemoryDevice(uint64_t size, bool read_only);
  ~MemoryDevice() override;

  uint64_t size() const override { return size_; }
  DeviceCapabilities capabilities() const override;
  std::string description() const override;

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override { done({}); }
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;

  // Bytes of RAM held by pages right now.
  uint64_t allocated_bytes() const { return allocated_pages_.load() * kPageSize; }

 private:
  static constexpr uint64_t kPagesPerChunk = 4096;  // one directory entry covers 256 MiB
  struct Chunk {
    std::array<std::atomic<std::byte*>, kPagesPerChunk> pages{};
  };

  std::atomic<std::byte*>& page_slot(uint64_t page_index);
  std::byte* peek_page(uint64_t page_index) const;
  std::mutex& stripe_for(uint64_t page_index) { return stripes_[page_index % stripes_.size()]; }
  // Visits the pages covering [offset, offset+length): fn(page_index, offset_in_page, bytes).
  template <class Fn>
  static void for_each_page(uint64_t offset, uint64_t length, Fn&& fn);
  // Zeroes part of a page, or frees it when the whole page is covered and freeing is allowed.
  void zero_range(uint64_t offset, uint64_t length, bool may_free, bool keep_allocated);

  const uint64_t size_;
  const bool read_only_;
  const uint64_t chunk_count_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
  // Pages are only allocated, filled and freed under their stripe's lock; readers take it too,
  // so a trim can never free a page under a concurrent copy.
  std::array<std::mutex, 64> stripes_;
  std::atomic<uint64_t> allocated_pages_{0};
};

}  // namespace volgate::backends
