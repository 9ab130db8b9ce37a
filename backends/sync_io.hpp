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

  // On a BlockDevice, or on a DeviceFront where the request is not known to be valid.
  template <class Target>
  std::error_code read(Target& device, uint64_t offset, std::span<std::byte> out) {
    return run([&](auto done) { device.read(offset, out, done); });
  }
  template <class Target>
  std::error_code write(Target& device, uint64_t offset, std::span<const std::byte> in, bool fua = false) {
    return run([&](auto done) { device.write(offset, in, {.fua = fua}, done); });
  }
  template <class Target>
  std::error_code flush(Target& device) {
    return run([&](auto done) { device.flush(done); });
  }

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  CurrentContextGuard guard_;
};

}  // namespace volgate::backends
