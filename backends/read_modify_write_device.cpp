#include "backends/read_modify_write_device.hpp"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstring>

#include "common/buffer_pool.hpp"
#include "common/current_context.hpp"

namespace volgate::backends {

ReadModifyWriteDevice::ReadModifyWriteDevice(std::shared_ptr<BlockDevice> base)
    : base_(std::move(base)),
      block_(std::max<uint32_t>(base_->capabilities().min_block_size, 1)),
      base_can_zero_(base_->capabilities().can_zero) {}

std::shared_ptr<BlockDevice> ReadModifyWriteDevice::over(std::shared_ptr<BlockDevice> base) {
  if (base->capabilities().min_block_size <= 1) return base;
  return std::make_shared<ReadModifyWriteDevice>(std::move(base));
}

DeviceCapabilities ReadModifyWriteDevice::capabilities() const {
  DeviceCapabilities caps = base_->capabilities();
  caps.min_block_size = 1;
  // Cached transfers would bypass the locks and the alignment.
  caps.can_read_cached = caps.can_write_cached = false;
  return caps;
}

ReadModifyWriteDevice::BlockRange ReadModifyWriteDevice::blocks_of(uint64_t offset,
                                                                   uint64_t length) const {
  return {offset / block_, (offset + length + block_ - 1) / block_};
}

void ReadModifyWriteDevice::when_unlocked(BlockRange range, bool lock, std::function<void()> go) {
  if (!lock && locked_count_.load(std::memory_order_acquire) == 0) return go();
  {
    std::lock_guard guard(mutex_);
    const bool busy = std::any_of(locked_.begin(), locked_.end(),
                                  [&](const BlockRange& held) { return held.overlaps(range); });
    if (busy) {
      // `lock` is remembered by re-entering through here when woken.
      waiters_.push_back({range, &current_io_context(), [this, range, lock, go = std::move(go)]() mutable {
                            when_unlocked(range, lock, std::move(go));
                          }});
      return;
    }
    if (lock) {
      locked_.push_back(range);
      locked_count_.store(locked_.size(), std::memory_order_release);
    }
  }
  go();
}

void ReadModifyWriteDevice::unlock(BlockRange range) {
  std::vector<Waiter> woken;
  {
    std::lock_guard guard(mutex_);
    auto it = std::find_if(locked_.begin(), locked_.end(), [&](const BlockRange& held) {
      return held.first == range.first && held.end == range.end;
    });
    if (it != locked_.end()) locked_.erase(it);
    locked_count_.store(locked_.size(), std::memory_order_release);
    // Every waiter that overlapped the released range tries again; one that still overlaps
    // another locked range queues up again behind it.
    auto stays = std::partition(waiters_.begin(), waiters_.end(),
                                [&](const Waiter& w) { return !w.range.overlaps(range); });
    std::move(stays, waiters_.end(), std::back_inserter(woken));
    waiters_.erase(stays, waiters_.end());
  }
  // On their own threads, and never inside the completion that released the lock.
  for (auto& w : woken) boost::asio::post(*w.io, std::move(w.go));
}

void ReadModifyWriteDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  if (aligned(offset, data.size())) return base_->read(offset, data, std::move(done));
  // The blocks around the range into a bounce buffer, then the part asked for.
  const BlockRange blocks = blocks_of(offset, data.size());
  const uint64_t start = blocks.first * block_;
  auto bounce = std::make_shared<Buffer>(Buffer::allocate((blocks.end - blocks.first) * block_));
  base_->read(start, bounce->span(), [offset, start, data, bounce, done = std::move(done)](std::error_code ec) {
    if (!ec) std::memcpy(data.data(), bounce->data() + (offset - start), data.size());
    done(ec);
  });
}

// One read-modify-write: the locked blocks, their bytes, and what to do when written.
struct ReadModifyWriteDevice::Patch {
  ReadModifyWriteDevice* self;
  BlockRange blocks;
  uint64_t offset;  // of the patch in the device
  uint64_t length;
  WriteFlags flags;
  std::function<void(std::span<std::byte>)> fill;
  Completion done;
  Buffer buffer;  // the blocks

  uint64_t start() const { return blocks.first * self->block_; }

  void finish(std::error_code ec) {
    std::unique_ptr<Patch> owned(this);
    self->unlock(blocks);
    done(ec);
  }

  // Only the first and last blocks hold bytes the patch keeps; the rest is overwritten whole.
  void read_edges() {
    const uint64_t block = self->block_;
    const bool head_partial = offset % block != 0;
    const bool tail_partial = (offset + length) % block != 0;
    const uint64_t count = blocks.end - blocks.first;
    const bool two_reads = head_partial && tail_partial && count > 1;
    auto pending = std::make_shared<int>(two_reads ? 2 : 1);
    auto first_error = std::make_shared<std::error_code>();
    auto read_done = [this, pending, first_error](std::error_code ec) {
      if (ec && !*first_error) *first_error = ec;
      if (--*pending == 0) {
        if (*first_error) return finish(*first_error);
        modify_and_write();
      }
    };
    if (head_partial || count == 1) {
      self->base_->read(start(), buffer.span().first(block), read_done);
      if (two_reads) self->base_->read(start() + (count - 1) * block,
                                       buffer.span().last(block), read_done);
    } else {
      self->base_->read(start() + (count - 1) * block, buffer.span().last(block), read_done);
    }
  }

  void modify_and_write() {
    fill(buffer.span().subspan(offset - start(), length));
    self->base_->write(start(), buffer.span(), flags, [this](std::error_code ec) { finish(ec); });
  }
};

void ReadModifyWriteDevice::patch(uint64_t offset, uint64_t length, WriteFlags flags,
                                  std::function<void(std::span<std::byte>)> fill,
                                  Completion done) {
  const BlockRange blocks = blocks_of(offset, length);
  auto* p = new Patch{this, blocks, offset, length, flags, std::move(fill), std::move(done), {}};
  when_unlocked(blocks, true, [p] {
    p->buffer = Buffer::allocate((p->blocks.end - p->blocks.first) * p->self->block_);
    p->read_edges();
  });
}

void ReadModifyWriteDevice::write(uint64_t offset, std::span<const std::byte> data,
                                  WriteFlags flags, Completion done) {
  if (aligned(offset, data.size())) {
    if (locked_count_.load(std::memory_order_acquire) == 0)
      return base_->write(offset, data, flags, std::move(done));  // no allocation on this path
    return when_unlocked(blocks_of(offset, data.size()), false,
                         [this, offset, data, flags, done = std::move(done)]() mutable {
                           base_->write(offset, data, flags, std::move(done));
                         });
  }
  patch(offset, data.size(), flags,
        [data](std::span<std::byte> target) { std::memcpy(target.data(), data.data(), data.size()); },
        std::move(done));
}

void ReadModifyWriteDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  const uint64_t first = (offset + block_ - 1) / block_ * block_;
  const uint64_t end = (offset + length) / block_ * block_;
  if (first >= end) return done({});  // no whole block: nothing to deallocate
  when_unlocked(blocks_of(first, end - first), false, [this, first, end, done = std::move(done)]() mutable {
    base_->trim(first, end - first, std::move(done));
  });
}

void ReadModifyWriteDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags,
                                         Completion done) {
  // A base that writes zeroes as data (LUKS) leaves it to the device front, before any edge is
  // patched.
  if (!base_can_zero_) return done(errno_code(ENOTSUP));
  if (aligned(offset, length)) {
    if (locked_count_.load(std::memory_order_acquire) == 0)
      return base_->write_zeroes(offset, length, flags, std::move(done));
    return when_unlocked(blocks_of(offset, length), false,
                         [this, offset, length, flags, done = std::move(done)]() mutable {
                           base_->write_zeroes(offset, length, flags, std::move(done));
                         });
  }
  // Partial blocks at the edges are patched with zeroes; whole blocks between them are zeroed
  // by the base (which may punch a hole). Both edges in one patch when there is no whole block.
  const uint64_t first = (offset + block_ - 1) / block_ * block_;
  const uint64_t end = (offset + length) / block_ * block_;
  auto zero = [](std::span<std::byte> target) { std::memset(target.data(), 0, target.size()); };
  const WriteFlags write_flags{.fua = flags.fua};
  if (first >= end) return patch(offset, length, write_flags, zero, std::move(done));
  // head, then tail, then the middle: one after the other, the first error ends it.
  auto middle = [this, first, end, flags, done = std::move(done)](std::error_code ec) mutable {
    if (ec) return done(ec);
    write_zeroes(first, end - first, flags, std::move(done));
  };
  auto tail = [this, end, stop = offset + length, write_flags, zero,
               middle = std::move(middle)](std::error_code ec) mutable {
    if (ec || stop == end) return middle(ec);
    patch(end, stop - end, write_flags, zero, std::move(middle));
  };
  if (offset == first) return tail({});
  patch(offset, first - offset, write_flags, zero, std::move(tail));
}

void ReadModifyWriteDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  const BlockRange blocks = blocks_of(offset, length);
  const uint64_t start = blocks.first * block_;
  const uint64_t end = std::min(blocks.end * block_, size());
  base_->block_status(start, end - start, [offset, length, start, done = std::move(done)](
                                              std::error_code ec, std::vector<Extent> extents) {
    if (ec) return done(ec, {});
    // Cut the extents to [offset, offset + length).
    std::vector<Extent> out;
    uint64_t at = start;
    for (const Extent& e : extents) {
      const uint64_t from = std::max(at, offset);
      const uint64_t to = std::min(at + e.length, offset + length);
      if (from < to) out.push_back({to - from, e.hole, e.zero});
      at += e.length;
      if (at >= offset + length) break;
    }
    if (out.empty()) return done(errno_code(EIO), {});
    done({}, std::move(out));
  });
}

void ReadModifyWriteDevice::cache(uint64_t offset, uint64_t length, Completion done) {
  const BlockRange blocks = blocks_of(offset, length);
  const uint64_t start = blocks.first * block_;
  base_->cache(start, std::min(blocks.end * block_, size()) - start, std::move(done));
}

}  // namespace volgate::backends
