#pragma once
// A Ceph RBD image (or one of its snapshots) served through librbd's asynchronous C API.
//
// librbd runs every request on its own threads and calls back from its finisher thread; each
// completion is posted back to the io_context that made the request, which a work guard keeps
// alive meanwhile, so no thread waits per request. The one synchronous call we need,
// rbd_diff_iterate2 for block status, runs on a helper thread owned by the device. All
// connections share one image handle and so one librbd cache: a flush covers them all.
//
// When the cluster goes away once serving, librbd keeps requests queued and resends them when
// it comes back (there is no OSD operation timeout by default), so the device never fails them
// itself.
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/thread_pool.hpp>

#include "backends/block_device.hpp"
#include "backends/rados_cluster.hpp"

namespace volgate::backends {

// Which cluster and client (RadosClientOptions), and which image of it.
struct RbdOptions : RadosClientOptions {
  std::string pool;
  std::optional<std::string> rados_namespace;  // an RBD namespace inside the pool
  std::string image;
  std::optional<std::string> snapshot;  // served read-only
  bool read_only = false;
};

class RbdDevice final : public BlockDevice {
 public:
  // Connects to the cluster (or shares a connection with the same client options) and opens
  // the image, waiting at most 10 s for the OSDs. Throws std::runtime_error with one line
  // naming the image and the monitors, file or OSDs at fault.
  static std::unique_ptr<RbdDevice> open(const RbdOptions& options);
  ~RbdDevice() override;

  uint64_t size() const override { return size_.load(std::memory_order_acquire); }
  DeviceCapabilities capabilities() const override;
  std::string description() const override;

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override;
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;

  // The largest range one block_status call describes: allocation is looked up object by
  // object on the OSDs, so a bounded range keeps the answer quick; clients ask again.
  static constexpr uint64_t kMaxBlockStatusBytes = 1ull << 30;

 private:
  struct Handles;

  RbdDevice(std::unique_ptr<Handles> handles, RbdOptions options, uint64_t size);
  static std::optional<int> open_image(Handles& handles, const std::string& image,
                                       const char* snapshot, bool read_only);
  // Keeps the pool and connection of an open that timed out alive for good.
  static void abandon(std::unique_ptr<Handles> handles);
  bool writable() const { return !options_.read_only && !options_.snapshot; }
  static void on_image_updated(void* self);

  const std::unique_ptr<Handles> handles_;
  const RbdOptions options_;
  std::atomic<uint64_t> size_;
  std::optional<uint64_t> watch_handle_;
  // Runs the synchronous allocation lookups off the I/O threads.
  boost::asio::thread_pool lookups_{1};
};

}  // namespace volgate::backends
