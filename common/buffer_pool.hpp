#pragma once
// Page-aligned I/O buffers recycled through a per-thread pool of power-of-two size classes.
//
// The data path allocates one buffer per request; recycling keeps that off malloc and keeps the
// process's footprint flat over a long run: each thread caches at most kMaxCachedBytes, and
// anything beyond is returned to the system at once. Buffers are aligned for O_DIRECT.
#include <cstddef>
#include <cstdint>
#include <span>

namespace volgate {

class Buffer {
 public:
  static constexpr size_t kAlignment = 4096;
  static constexpr size_t kMinClassSize = 4096;
  static constexpr size_t kMaxSize = size_t{64} << 20;
  static constexpr size_t kMaxCachedBytes = size_t{64} << 20;

  Buffer() = default;
  // A buffer of exactly `size` usable bytes (its capacity is rounded up to a size class).
  // Contents are unspecified. `size` must not exceed kMaxSize.
  static Buffer allocate(size_t size);

  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<std::byte> span() const { return {data_, size_}; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  Buffer(std::byte* data, size_t size, uint8_t size_class)
      : data_(data), size_(size), size_class_(size_class) {}
  void release();

  std::byte* data_ = nullptr;
  size_t size_ = 0;
  uint8_t size_class_ = 0;
};

// Bytes currently held from the system by all pools (in use plus cached), for metrics and tests.
size_t buffer_pool_bytes_held();

}  // namespace volgate
