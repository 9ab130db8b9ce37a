#pragma once
// Test helpers over backends::SyncIo.
#include <boost/asio/io_context.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "backends/block_device.hpp"
#include "backends/sync_io.hpp"

namespace volgate::testing {

// The library's SyncIo plus the vector-based helpers the tests like to use.
class DeviceSync : public backends::SyncIo {
 public:
  using SyncIo::read;
  using SyncIo::write;

  template <class Target>
  std::pair<std::error_code, std::vector<backends::Extent>> block_status(Target& d, uint64_t offset,
                                                                         uint64_t length) {
    std::pair<std::error_code, std::vector<backends::Extent>> out{backends::errno_code(ETIMEDOUT), {}};
    d.block_status(offset, length, [&](std::error_code ec, std::vector<backends::Extent> e) {
      out = {ec, std::move(e)};
    });
    io().restart();
    io().run();
    return out;
  }

  template <class Target>
  std::error_code read(Target& d, uint64_t offset, std::vector<std::byte>& out) {
    return SyncIo::read(d, offset, std::span<std::byte>(out));
  }
  template <class Target>
  std::error_code write(Target& d, uint64_t offset, const std::vector<std::byte>& in, bool fua = false) {
    return SyncIo::write(d, offset, std::span<const std::byte>(in), fua);
  }
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
