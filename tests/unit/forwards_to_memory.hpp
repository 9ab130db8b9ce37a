#pragma once
// A BlockDevice that passes every call to a MemoryDevice it owns: the base of test doubles
// that each change one thing (fail writes, count reads, pretend to have a page cache).
#include <string>
#include <utility>

#include "backends/memory_device.hpp"

namespace volgate::testing {

class ForwardsToMemory : public backends::BlockDevice {
 public:
  explicit ForwardsToMemory(uint64_t size) : memory_(size, false) {}
  uint64_t size() const override { return memory_.size(); }
  backends::DeviceCapabilities capabilities() const override { return memory_.capabilities(); }
  std::string description() const override { return "test " + memory_.description(); }
  void read(uint64_t o, std::span<std::byte> d, backends::Completion done) override {
    memory_.read(o, d, std::move(done));
  }
  void write(uint64_t o, std::span<const std::byte> d, backends::WriteFlags f,
             backends::Completion done) override {
    memory_.write(o, d, f, std::move(done));
  }
  void flush(backends::Completion done) override { memory_.flush(std::move(done)); }
  void trim(uint64_t o, uint64_t l, backends::Completion done) override { memory_.trim(o, l, std::move(done)); }
  void write_zeroes(uint64_t o, uint64_t l, backends::ZeroFlags f, backends::Completion done) override {
    memory_.write_zeroes(o, l, f, std::move(done));
  }
  void block_status(uint64_t o, uint64_t l, backends::ExtentsCompletion done) override {
    memory_.block_status(o, l, std::move(done));
  }

 protected:
  backends::MemoryDevice memory_;
};

}  // namespace volgate::testing
