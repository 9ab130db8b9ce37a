#pragma once
// Any byte range over a device that takes only whole blocks (LUKS sectors, O_DIRECT files):
// a BlockDevice decorator for front-ends whose clients do not know the device's block size.
// NBD clients are told the minimum block size and keep to it; a file in a FUSE mount is written
// at whatever offset and length a program picks.
//
// A write that starts or ends inside a block reads the blocks it covers in part, patches them
// and writes the whole span back (read-modify-write). Two such writes that touch the same block
// would each write back the other's bytes as they were before, losing one; so the blocks of
// every read-modify-write are locked while it runs, and a later write, zeroing or trim that
// touches a locked block waits until it is released. Aligned requests pass straight through and
// cost one atomic load when nothing is locked. What is not covered: an aligned write that was
// already in flight when a read-modify-write of the same block began; the two then overlap in
// bytes, a case whose outcome no client can rely on from a disk either.
//
// Trims are advisory: only whole blocks inside the range are passed on. Zeroing writes zeroes
// into partial blocks the same read-modify-write way and passes the whole blocks on.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "backends/block_device.hpp"

namespace volgate::backends {

class ReadModifyWriteDevice final : public BlockDevice {
 public:
  explicit ReadModifyWriteDevice(std::shared_ptr<BlockDevice> base);

  // The device a front-end should use for byte-addressed access to `base`: `base` itself when
  // it takes any range already, otherwise a ReadModifyWriteDevice over it.
  static std::shared_ptr<BlockDevice> over(std::shared_ptr<BlockDevice> base);

  uint64_t size() const override { return base_->size(); }
  DeviceCapabilities capabilities() const override;
  std::string description() const override { return base_->description(); }

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override { base_->flush(std::move(done)); }
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;
  void cache(uint64_t offset, uint64_t length, Completion done) override;
  boost::asio::io_context* home_context() override { return base_->home_context(); }
  void report_metrics(MetricsReport& report, const MetricLabels& labels) const override {
    base_->report_metrics(report, labels);
  }

  const BlockDevice& base() const { return *base_; }

 private:
  struct Patch;
  // Blocks [first, end) of the base.
  struct BlockRange {
    uint64_t first;
    uint64_t end;
    bool overlaps(const BlockRange& o) const { return first < o.end && o.first < end; }
  };
  struct Waiter {
    BlockRange range;
    boost::asio::io_context* io;  // the caller's: the request goes on there
    std::function<void()> go;
  };

  BlockRange blocks_of(uint64_t offset, uint64_t length) const;
  bool aligned(uint64_t offset, uint64_t length) const {
    return offset % block_ == 0 && length % block_ == 0;
  }
  // Runs `go` now if no locked block overlaps `range` (taking the lock when `lock`), or later,
  // on the caller's io_context, once none does.
  void when_unlocked(BlockRange range, bool lock, std::function<void()> go);
  void unlock(BlockRange range);
  // The read-modify-write of [offset, offset + length): `fill` writes the new bytes into the
  // span of the read blocks it is given (the request's data, or zeroes).
  void patch(uint64_t offset, uint64_t length, WriteFlags flags,
             std::function<void(std::span<std::byte>)> fill, Completion done);

  const std::shared_ptr<BlockDevice> base_;
  const uint64_t block_;
  const bool base_can_zero_;  // write_zeroes without sending data; otherwise ENOTSUP at once

  std::atomic<size_t> locked_count_{0};  // locked_.size(), read without the mutex
  std::mutex mutex_;
  std::vector<BlockRange> locked_;
  std::vector<Waiter> waiters_;
};

}  // namespace volgate::backends
