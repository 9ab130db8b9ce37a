#pragma once
// Runs BlockDevice calls to completion on a private io_context, for work that happens outside
// the serving workers: command-line tools (LUKS header work) and start-up checks. The calling
// thread must not already be running a worker's io_context.
#include <boost/asio/io_context.hpp>
#include <optional>
#include <span>
#include <system_error>
#include <utility>

#include "backends/block_device.hpp"
#include "backends/device_front.hpp"
#include "common/current_context.hpp"

namespace volgate::backends {

class SyncIo {
 public:
  SyncIo() : guard_(io_) {}

  // Calls start(done) and runs the io_context until done has been called.
  template <class Start>
  std::error_code run(Start&& start) {
    std::optional<std::error_code> result;
    start([&](std::error_code ec) { result = ec; });
    io_.restart();
    io_.run();
    if (!result) return errno_code(ETIMEDOUT);  // a device that never completed: a bug
    return *result;
  }

  // On a DeviceFront, or on a BlockDevice through a front made for the call: a request from a
  // tool (a header's offsets, an image's size) is checked as a client's is, and never reaches
  // a device outside its range.
  std::error_code read(DeviceFront& front, uint64_t offset, std::span<std::byte> out) {
    return run([&](auto done) { front.read(offset, out, done); });
  }
  std::error_code write(DeviceFront& front, uint64_t offset, std::span<const std::byte> in, bool fua = false) {
    return run([&](auto done) { front.write(offset, in, {.fua = fua}, done); });
  }
  std::error_code flush(DeviceFront& front) {
    return run([&](auto done) { front.flush(done); });
  }
  std::error_code read(BlockDevice& device, uint64_t offset, std::span<std::byte> out) {
    DeviceFront front(device);
    return read(front, offset, out);
  }
  std::error_code write(BlockDevice& device, uint64_t offset, std::span<const std::byte> in, bool fua = false) {
    DeviceFront front(device);
    return write(front, offset, in, fua);
  }
  std::error_code flush(BlockDevice& device) {
    DeviceFront front(device);
    return flush(front);
  }

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  CurrentContextGuard guard_;
};

}  // namespace volgate::backends
