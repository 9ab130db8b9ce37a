#pragma once
// The one interface every storage backend implements, and every front-end (NBD, FUSE, nbdkit
// plugin) and decorator (LUKS) consumes.
//
// Contract:
//  - Calls are made from a worker thread that runs an io_context marked current
//    (common/current_context.hpp), except read_cached()/write_cached(), which any thread may
//    call at any time. Every completion is invoked on that same io_context's thread,
//    exactly once. It may be invoked before the call returns (memory-speed devices do that),
//    so callers must not hold state across the call that the completion invalidates.
//  - Requests come through a DeviceFront (backends/device_front.hpp), or from a decorator that
//    got them from one: each is inside size(), aligned to min_block_size, not empty, and never
//    a change to a read-only device. Devices check none of that again. What a device cannot do
//    it says in its capabilities, and the front does it (zeroes as writes, FUA as a flush, a
//    trim, cache hint or block status it has not); write_zeroes may also answer ENOTSUP when
//    the device finds out only then (the front writes the zeroes).
//  - Errors are errno values carried in std::error_code (generic category), so a front-end can
//    map them onto its own protocol's error set.
//  - A device may be used from several threads at once; data buffers belong to the caller until
//    the completion runs.
#include <cerrno>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "common/metrics_report.hpp"

namespace boost::asio {
class io_context;
}

namespace volgate::backends {

using volgate::MetricLabels;
using volgate::MetricsReport;

// Completions are std::function; capture at most two pointers so they stay in its small-object
// buffer and do not allocate on the data path.
using Completion = std::function<void(std::error_code)>;

struct Extent {
  uint64_t length;
  bool hole;  // not allocated in the storage
  bool zero;  // reads as zeroes
};
using ExtentsCompletion = std::function<void(std::error_code, std::vector<Extent>)>;

struct WriteFlags {
  bool fua = false;  // durable before completion
};

struct ZeroFlags {
  bool may_trim = true;     // may deallocate (punch a hole) instead of writing zeroes
  bool fast_only = false;   // fail with ENOTSUP instead of falling back to a slow write
  bool fua = false;
};

struct DeviceCapabilities {
  bool read_only = false;
  bool can_trim = false;
  bool can_zero = false;        // write_zeroes without sending data
  bool can_fast_zero = false;   // some zeroing is cheap enough for FAST_ZERO to succeed
  bool can_fua = false;         // one write can be made durable by itself
  bool can_flush = true;
  bool can_cache = false;       // CACHE does something useful (prefetch)
  bool can_block_status = false;
  bool can_multi_conn = false;  // all connections share one cache: flush covers them all
  // Requests usually finish within microseconds (RAM, the page cache), so the next request is
  // worth busy-polling for; not so for a network round trip (iSCSI, RBD).
  bool fast_completions = false;
  // read_cached()/write_cached() may move bytes (see there); without these they move none.
  // They can turn false while the device is open (a filesystem found to refuse them).
  bool can_read_cached = false;
  bool can_write_cached = false;
  // A write acknowledged here is seen at once by another process that opens the same storage
  // (one page cache, one iSCSI target), so a hand-over to such a process needs no flush first.
  // False where this process may hold writes back (librbd's cache) and by default.
  bool writes_shared_at_once = false;
  uint32_t min_block_size = 1;  // requests must be aligned to this
  uint32_t preferred_block_size = 4096;
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  virtual uint64_t size() const = 0;
  virtual DeviceCapabilities capabilities() const = 0;
  // A short human description for logs and NBD_INFO_DESCRIPTION ("file /srv/a.img").
  virtual std::string description() const = 0;

  virtual void read(uint64_t offset, std::span<std::byte> data, Completion done) = 0;
  virtual void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
                     Completion done) = 0;
  virtual void flush(Completion done) = 0;
  virtual void trim(uint64_t offset, uint64_t length, Completion done) = 0;
  virtual void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags,
                            Completion done) = 0;
  // Describes allocation from `offset`; may cover less than `length`, never more, never nothing.
  virtual void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) = 0;
  // A hint to bring the range close (prefetch). Devices without a cache complete at once.
  virtual void cache(uint64_t offset, uint64_t length, Completion done) {
    (void)offset, (void)length;
    done({});
  }
  // The io_context whose thread does this device's work, when it has one of its own (iSCSI
  // paths live on one thread). A front-end that runs its connection there saves two thread
  // changes per request. Null: the device works on its callers' threads or its own pool.
  virtual boost::asio::io_context* home_context() { return nullptr; }

  // Adds this device's own metrics (iSCSI paths, LUKS cipher bytes; most devices have none) to
  // a scrape, each sample with `labels` first (the export's name). From any thread, at any
  // time, without waiting for the device's thread. A decorator adds its base's too.
  virtual void report_metrics(MetricsReport& /*report*/, const MetricLabels& /*labels*/) const {}

  // A live hand-over between two gateway processes serving this storage (volgate serve
  // --take-over) has committed. In the predecessor (`successor` false) the device has nothing
  // in flight and is about to close: it must leave what the successor relies on (iSCSI: the
  // reservation). In the successor it may now claim the storage as its own (iSCSI: preempt the
  // predecessor's reservation keys before its first request). Decorators pass it on; from any
  // thread.
  virtual void handover_committed(bool successor) { (void)successor; }

  // Move bytes right here, on any thread, as far as that needs no wait for a device (page-cache
  // hits), and return how many bytes from the start of `data` were moved: possibly none, and
  // never an error (the rest goes through read()/write(), which report errors). A decorator
  // that already runs on a helper thread (LUKS) can then do the copy there, while the bytes are
  // in that core's cache, without a round trip through the I/O thread. These writes are not
  // durable (no FUA); a later flush() on any thread covers them, as it covers write()'s.
  virtual uint64_t read_cached(uint64_t offset, std::span<std::byte> data) {
    (void)offset, (void)data;
    return 0;
  }
  virtual uint64_t write_cached(uint64_t offset, std::span<const std::byte> data) {
    (void)offset, (void)data;
    return 0;
  }
};

inline std::error_code errno_code(int error) { return {error, std::generic_category()}; }
// The errno a front-end reports for a device's error (FUSE replies, nbdkit_set_error): devices
// give errno values in the generic category; anything else is an I/O error.
inline int errno_of(std::error_code ec) {
  if (ec.category() == std::generic_category() || ec.category() == std::system_category())
    return ec.value() > 0 ? ec.value() : EIO;
  return EIO;
}

}  // namespace volgate::backends
