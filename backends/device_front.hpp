#pragma once
// The one door through which a front-end (an NBD connection, the FUSE file, the nbdkit plugin)
// reaches a device stack. What every device would otherwise repeat is done here, once:
//  - each request is checked (inside the size, aligned to the minimum block size, no change to
//    a read-only device), so the devices below never see one that fails these and check
//    nothing themselves;
//  - the size and the capabilities are read when the front is made (once per NBD connection,
//    per FUSE view), not per request;
//  - what a device lacks is done for it: zeroes are written as data when the device has no
//    cheaper way (it says can_zero false, or answers ENOTSUP), FUA becomes a flush after the
//    write, and a trim, a cache hint or a block status the device cannot do is answered here.
// Decorators (LUKS, read-modify-write) pass on requests in their own valid range, so the check
// made here holds all the way down. nbdkit's server does the same for its plugins and filters.
#include <atomic>
#include <cstdint>
#include <span>

#include "backends/block_device.hpp"

namespace volgate::backends {

enum class DeviceRequest { read, write, flush, trim, zero, block_status, cache };

class DeviceFront {
 public:
  // `device` must outlive the front and every request made through it.
  explicit DeviceFront(BlockDevice& device);

  DeviceFront(const DeviceFront&) = delete;
  DeviceFront& operator=(const DeviceFront&) = delete;

  BlockDevice& device() const { return *device_; }
  uint64_t size() const { return size_.load(std::memory_order_relaxed); }
  // What a front-end may offer its clients: the device's capabilities, with zeroes and FUA
  // always possible on a writable device (emulated here when the device cannot).
  const DeviceCapabilities& capabilities() const { return offered_; }
  // Reads the size again, for a front-end that follows a volume that grew (the FUSE file; an
  // NBD connection keeps the size it was given). From any thread, at any time.
  void refresh_size() { size_.store(device_->size(), std::memory_order_relaxed); }

  // 0 when a request may go to the device; otherwise the errno it is refused with:
  // EPERM for a write, trim or zeroing on a read-only device, ENOSPC for a write or zeroing
  // that ends past the end, EINVAL for any other range past the end, a range not aligned to
  // the minimum block size, and a block status of nothing.
  int refusal(DeviceRequest kind, uint64_t offset, uint64_t length) const;

  // Each checks with refusal() first and completes with that error without reaching the device.
  void read(uint64_t offset, std::span<std::byte> data, Completion done);
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags, Completion done);
  void flush(Completion done);
  // `flags.fua`: the deallocation is made durable (a flush) before completion.
  void trim(uint64_t offset, uint64_t length, WriteFlags flags, Completion done);
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done);
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done);
  void cache(uint64_t offset, uint64_t length, Completion done);

 private:
  struct ThenFlush;
  struct ZeroFill;
  // `done`, after a flush once the request it completes has succeeded (none where the device
  // cannot flush): FUA where the device has none, for trims, for zeroes written as data.
  Completion flushed_after(Completion done) const;
  static void fill_with_zeroes(BlockDevice& device, uint64_t offset, uint64_t length, Completion done);

  BlockDevice* const device_;
  std::atomic<uint64_t> size_;
  const DeviceCapabilities device_caps_;
  const DeviceCapabilities offered_;
};

}  // namespace volgate::backends
