#pragma once
// What the gateway counts per export: requests and bytes by type, errors by type and error,
// requests in flight, and latency histograms of reads, writes and flushes; the sessions (and
// the FUSE front-end) count, metrics scrapes and the control API read.
//
// Counting is on every request's path, so it takes no lock and no atomic shared between
// threads: each thread adds to its own slot (ThreadCounters), and a reader sums the slots. An
// NBD session runs on one thread for its life and keeps its slot from attach() on.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/latency_buckets.hpp"
#include "common/metrics_report.hpp"
#include "common/thread_counters.hpp"

namespace volgate::nbd {

// Request types, in the order of the NBD command numbers, plus one for unknown commands.
enum class RequestKind : uint8_t { read, write, flush, trim, cache, write_zeroes, block_status, unknown };
inline constexpr size_t kRequestKinds = 8;
// The NBD error a request was answered with (nbd/protocol.hpp's kE* values), by index.
inline constexpr size_t kErrorKinds = 8;  // EPERM EIO ENOMEM EINVAL ENOSPC EOVERFLOW ENOTSUP ESHUTDOWN
// The requests whose latency is a histogram.
enum class TimedKind : uint8_t { read, write, flush };
inline constexpr size_t kTimedKinds = 3;

RequestKind request_kind(uint16_t nbd_command);
size_t error_index(uint32_t nbd_error);  // unknown values count as EIO
// The NBD error an errno is answered with (EROFS is EPERM, EDQUOT ENOSPC, ...; others EIO).
uint32_t nbd_error_of(int error);

struct ExportCounters {
  // Counter numbers within the per-thread slots.
  static constexpr size_t kRequests = 0;                                    // + kind
  static constexpr size_t kBytes = kRequests + kRequestKinds;               // + kind
  static constexpr size_t kErrors = kBytes + kRequestKinds;                 // + kind * kErrorKinds + error
  static constexpr size_t kStarted = kErrors + kRequestKinds * kErrorKinds;  // requests received
  static constexpr size_t kFinished = kStarted + 1;                         // ... and done with
  static constexpr size_t kLatency = kFinished + 1;  // + timed * (buckets + 1) + bucket; the sum after
  static constexpr size_t kLatencyStride = kLatencyBuckets + 1;
  static constexpr size_t kCount = kLatency + kTimedKinds * kLatencyStride;

  using Counters = ThreadCounters<kCount>;
  using Slot = Counters::Slot;

  // A request answered: counted under its type, with its bytes when it succeeded.
  static void answered(Slot& slot, RequestKind kind, uint64_t bytes) {
    slot.add(kRequests + size_t(kind));
    if (bytes) slot.add(kBytes + size_t(kind), bytes);
  }
  static void failed(Slot& slot, RequestKind kind, uint32_t nbd_error) {
    slot.add(kRequests + size_t(kind));
    slot.add(kErrors + size_t(kind) * kErrorKinds + error_index(nbd_error));
  }
  static void took(Slot& slot, TimedKind kind, std::chrono::nanoseconds elapsed) {
    const uint64_t ns = elapsed.count() > 0 ? static_cast<uint64_t>(elapsed.count()) : 0;
    const size_t base = kLatency + size_t(kind) * kLatencyStride;
    slot.add(base + latency_bucket(ns));
    slot.add(base + kLatencyBuckets, ns);
  }

  // The same from a thread that keeps no slot (the FUSE front-end's).
  void answered(RequestKind kind, uint64_t bytes) { answered(counters.this_thread_slot(), kind, bytes); }
  // A request that failed with errno `error`, counted under the NBD error it maps to.
  void failed_errno(RequestKind kind, int error);

  struct Totals {
    uint64_t reads, writes, bytes_read, bytes_written, errors;
  };
  Totals totals() const;
  // This export's samples, labelled export="NAME".
  void report(MetricsReport& report, const std::string& export_name) const;
  // Every family report() adds to, with no sample: a gateway with no export still names them.
  static void declare(MetricsReport& report);

  Counters counters;
  std::atomic<uint32_t> connections{0};  // sessions in the transmission phase
};

}  // namespace volgate::nbd
