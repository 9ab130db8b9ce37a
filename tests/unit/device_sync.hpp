#pragma once
// Runs asynchronous BlockDevice calls to completion on a private io_context, for tests.
#include <boost/asio/io_context.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "backends/block_device.hpp"
#include "common/current_context.hpp"

namespace volgate::testing {

class DeviceSync {
 public:
  DeviceSync() : guard_(io_) {}

  template <class Start>
  std::error_code run(Start&& start) {
    std::optional<std::error_code> result;
    start([&](std::error_code ec) { result = ec; });
    io_.restart();
    io_.run();
    if (!result) return backends::errno_code(ETIMEDOUT);  // completion never arrived
    return *result;
  }

  std::pair<std::error_code, std::vector<backends::Extent>> block_status(
      backends::BlockDevice& d, uint64_t offset, uint64_t length) {
    std::pair<std::error_code, std::vector<backends::Extent>> out{backends::errno_code(ETIMEDOUT), {}};
    d.block_status(offset, length, [&](std::error_code ec, std::vector<backends::Extent> e) {
      out = {ec, std::move(e)};
    });
    io_.restart();
    io_.run();
    return out;
  }

  std::error_code read(backends::BlockDevice& d, uint64_t offset, std::vector<std::byte>& out) {
    return run([&](auto done) { d.read(offset, out, done); });
  }
  std::error_code write(backends::BlockDevice& d, uint64_t offset, const std::vector<std::byte>& in,
                        bool fua = false) {
    return run([&](auto done) { d.write(offset, in, {.fua = fua}, done); });
  }

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  CurrentContextGuard guard_;
};

inline std::vector<std::byte> pattern(size_t size, uint8_t seed) {
  std::vector<std::byte> v(size);
  for (size_t i = 0; i < size; ++i) v[i] = std::byte(static_cast<uint8_t>(seed + i * 31 + (i >> 9)));
  return v;
}

inline bool all_zero(const std::vector<std::byte>& v) {
  for (auto b : v)
    if (b != std::byte{0}) return false;
  return true;
}

}  // namespace volgate::testing
