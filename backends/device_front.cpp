#include "backends/device_front.hpp"

#include <algorithm>

#include "common/per_thread_pool.hpp"

namespace volgate::backends {
namespace {

// Emulated zeroes are written from here, a piece at a time: aligned for O_DIRECT, a multiple of
// every block size a device may ask for, and large enough that an encrypting device does its
// cipher work for a piece on a helper thread.
constexpr uint64_t kZeroPiece = 1 << 20;
alignas(4096) const std::byte zero_piece[kZeroPiece] = {};

}  // namespace

// Runs a flush after the request it completes has succeeded, then answers: FUA for a device
// that cannot make one write durable, and for trims and emulated zeroes.
struct DeviceFront::ThenFlush {
  BlockDevice* device;
  Completion done;

  static Completion wrap(BlockDevice& device, Completion done) {
    ThenFlush* self = PerThreadPool<ThenFlush>::make(&device, std::move(done));
    return [self](std::error_code ec) { self->step(ec); };
  }
  void step(std::error_code ec) {
    if (ec) return finish(ec);
    device->flush([this](std::error_code e) { finish(e); });
  }
  void finish(std::error_code ec) {
    Completion callback = std::move(done);
    PerThreadPool<ThenFlush>::destroy(this);
    callback(ec);
  }
};

// Zeroes written as data, one piece after the other, so that gigabytes of zeroes take no more
// memory than the one shared piece. A loop rather than recursion: a device that completes
// inline would otherwise nest one stack frame per piece.
struct DeviceFront::ZeroFill {
  BlockDevice* device;
  uint64_t offset;
  uint64_t remaining;
  Completion done;
  bool in_write = false;         // device->write() is on the stack
  bool write_completed = false;  // and its completion has run already
  std::error_code write_error;   // with this outcome

  void next() {
    while (remaining > 0) {
      const uint64_t length = std::min(kZeroPiece, remaining);
      const uint64_t at = offset;
      offset += length;
      remaining -= length;
      in_write = true;
      write_completed = false;
      device->write(at, {zero_piece, static_cast<size_t>(length)}, {}, [this](std::error_code ec) {
        if (in_write) {
          write_completed = true;
          write_error = ec;
          return;
        }
        if (ec) return finish(ec);
        next();
      });
      in_write = false;
      if (!write_completed) return;  // its completion goes on
      if (write_error) return finish(write_error);
    }
    finish({});
  }
  void finish(std::error_code ec) {
    Completion callback = std::move(done);
    PerThreadPool<ZeroFill>::destroy(this);
    callback(ec);
  }
};

// What the front offers: zeroes and FUA always (emulated where the device has none); the rest
// as the device has it.
static DeviceCapabilities offered_by_front(DeviceCapabilities caps) {
  const bool writable = !caps.read_only;
  caps.min_block_size = std::max<uint32_t>(caps.min_block_size, 1);
  caps.can_zero = writable;
  caps.can_fua = writable;
  caps.can_fast_zero = writable && caps.can_fast_zero;
  caps.can_trim = writable && caps.can_trim;
  return caps;
}

DeviceFront::DeviceFront(BlockDevice& device)
    : device_(&device),
      size_(device.size()),
      device_caps_(device.capabilities()),
      offered_(offered_by_front(device_caps_)) {}

int DeviceFront::refusal(DeviceRequest kind, uint64_t offset, uint64_t length) const {
  const bool changes = kind == DeviceRequest::write || kind == DeviceRequest::trim || kind == DeviceRequest::zero;
  if (changes && device_caps_.read_only) return EPERM;
  if (kind == DeviceRequest::flush) return 0;
  const uint64_t size = this->size();
  if (offset > size || length > size - offset)
    return kind == DeviceRequest::write || kind == DeviceRequest::zero ? ENOSPC : EINVAL;
  const uint32_t block = offered_.min_block_size;
  if (block > 1 && (offset % block != 0 || length % block != 0)) return EINVAL;
  if (kind == DeviceRequest::block_status && (length == 0 || offset == size)) return EINVAL;
  return 0;
}

void DeviceFront::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  if (int error = refusal(DeviceRequest::read, offset, data.size())) return done(errno_code(error));
  if (data.empty()) return done({});
  device_->read(offset, data, std::move(done));
}

void DeviceFront::write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
                        Completion done) {
  if (int error = refusal(DeviceRequest::write, offset, data.size())) return done(errno_code(error));
  if (data.empty()) return done({});
  if (flags.fua && !device_caps_.can_fua) {
    flags.fua = false;
    done = flushed_after(std::move(done));
  }
  device_->write(offset, data, flags, std::move(done));
}

void DeviceFront::flush(Completion done) {
  // Nothing to make durable on a device nothing can change, or one that needs no flush.
  if (device_caps_.read_only || !device_caps_.can_flush) return done({});
  device_->flush(std::move(done));
}

void DeviceFront::trim(uint64_t offset, uint64_t length, WriteFlags flags, Completion done) {
  if (int error = refusal(DeviceRequest::trim, offset, length)) return done(errno_code(error));
  // A trim is a hint: a device that cannot deallocate may ignore it, as NBD and FUSE allow.
  if (length == 0 || !device_caps_.can_trim) return done({});
  if (flags.fua) done = flushed_after(std::move(done));
  device_->trim(offset, length, std::move(done));
}

void DeviceFront::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) {
  if (int error = refusal(DeviceRequest::zero, offset, length)) return done(errno_code(error));
  if (flags.fast_only && !device_caps_.can_fast_zero) return done(errno_code(ENOTSUP));
  if (length == 0) return done({});
  if (!device_caps_.can_zero) {
    if (flags.fua) done = flushed_after(std::move(done));
    return fill_with_zeroes(*device_, offset, length, std::move(done));
  }
  if (flags.fua && !device_caps_.can_fua) {
    flags.fua = false;
    done = flushed_after(std::move(done));
  }
  if (flags.fast_only) return device_->write_zeroes(offset, length, flags, std::move(done));
  // A device that finds out only now that it has no cheap way (a filesystem without
  // fallocate's zeroing, a target without WRITE SAME) answers ENOTSUP: then they are written.
  // Its FUA was not acted on then, and the fill's flush covers it.
  struct Fallback {
    DeviceFront* front;
    uint64_t offset, length;
    bool fua;
    Completion done;
  };
  auto* fallback = PerThreadPool<Fallback>::make(this, offset, length, flags.fua, std::move(done));
  device_->write_zeroes(offset, length, flags, [fallback](std::error_code ec) {
    Fallback f = std::move(*fallback);
    PerThreadPool<Fallback>::destroy(fallback);
    if (ec != std::errc::not_supported && ec != std::errc::operation_not_supported) return f.done(ec);
    if (f.fua) f.done = f.front->flushed_after(std::move(f.done));
    fill_with_zeroes(f.front->device(), f.offset, f.length, std::move(f.done));
  });
}

Completion DeviceFront::flushed_after(Completion done) const {
  // A device that cannot flush writes through: there is nothing to wait for.
  if (!device_caps_.can_flush) return done;
  return ThenFlush::wrap(*device_, std::move(done));
}

void DeviceFront::fill_with_zeroes(BlockDevice& device, uint64_t offset, uint64_t length, Completion done) {
  PerThreadPool<ZeroFill>::make(&device, offset, length, std::move(done))->next();
}

void DeviceFront::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  if (int error = refusal(DeviceRequest::block_status, offset, length)) return done(errno_code(error), {});
  // Without allocation data every byte may hold data: a correct, if unhelpful, answer.
  if (!device_caps_.can_block_status) return done({}, {Extent{length, false, false}});
  device_->block_status(offset, length, std::move(done));
}

void DeviceFront::cache(uint64_t offset, uint64_t length, Completion done) {
  if (int error = refusal(DeviceRequest::cache, offset, length)) return done(errno_code(error));
  if (length == 0 || !device_caps_.can_cache) return done({});
  device_->cache(offset, length, std::move(done));
}

}  // namespace volgate::backends
