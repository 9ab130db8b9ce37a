#pragma once
// A regular file (or a block device node) served through io_uring.
//
// Trim and zeroing punch holes, so a thin image stays thin; allocation comes from
// SEEK_DATA/SEEK_HOLE; flush is fdatasync. All connections share the one file descriptor and
// the kernel's page cache, which is what makes multi-conn safe.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "backends/block_device.hpp"

namespace volgate::backends {

struct FileOptions {
  std::string path;
  bool read_only = false;
  bool direct = false;                 // O_DIRECT: bypass the page cache
  std::optional<uint64_t> create_size;  // create the file, or grow it, to this size
};

class FileDevice final : public BlockDevice {
 public:
  // Block size every request must be aligned to with O_DIRECT.
  static constexpr uint32_t kDirectAlignment = 4096;

  // Opens (and with create_size, creates or grows) the file. Throws std::system_error or
  // std::invalid_argument with a message naming the path and the reason.
  static std::unique_ptr<FileDevice> open(const FileOptions& options);
  ~FileDevice() override;

  uint64_t size() const override { return size_; }
  DeviceCapabilities capabilities() const override;
  std::string description() const override;

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override;
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;
  void cache(uint64_t offset, uint64_t length, Completion done) override;

  // Flushes synchronously; used at shutdown, outside any io_context.
  std::error_code flush_now();

 private:
  FileDevice(int fd, uint64_t size, FileOptions options, bool is_block_device);
  bool in_range(uint64_t offset, uint64_t length) const;

  const int fd_;
  const uint64_t size_;
  const FileOptions options_;
  const bool is_block_device_;
};

}  // namespace volgate::backends
