#include "nbd/export_counters.hpp"

#include <array>
#include <cerrno>

#include "nbd/protocol.hpp"

namespace volgate::nbd {
namespace {

constexpr std::array<const char*, kRequestKinds> kKindNames{
    "read", "write", "flush", "trim", "cache", "write_zeroes", "block_status", "unknown"};
constexpr std::array<uint32_t, kErrorKinds> kErrorValues{kEperm,     kEio,     kEnomem,   kEinval,
                                                         kEnospc,    kEoverflow, kEnotsup, kEshutdown};
constexpr std::array<const char*, kErrorKinds> kErrorNames{"EPERM",  "EIO",       "ENOMEM",  "EINVAL",
                                                           "ENOSPC", "EOVERFLOW", "ENOTSUP", "ESHUTDOWN"};
constexpr std::array<const char*, kTimedKinds> kTimedNames{"read", "write", "flush"};

constexpr const char* kRequestsName = "volgate_export_requests_total";
constexpr const char* kRequestsHelp = "NBD (and FUSE) requests answered, by type, failed ones included.";
constexpr const char* kBytesName = "volgate_export_bytes_total";
constexpr const char* kBytesHelp =
    "Bytes of the requests that succeeded, by type (read and write: data moved; trim, write_zeroes, "
    "cache: the range).";
constexpr const char* kErrorsName = "volgate_export_errors_total";
constexpr const char* kErrorsHelp = "Requests answered with an error, by type and NBD error.";
constexpr const char* kInFlightName = "volgate_export_requests_in_flight";
constexpr const char* kInFlightHelp = "Requests received and not yet answered.";
constexpr const char* kConnectionsName = "volgate_export_connections";
constexpr const char* kConnectionsHelp = "Open NBD connections past the handshake.";
constexpr const char* kLatencyName = "volgate_export_request_duration_seconds";
constexpr const char* kLatencyHelp =
    "From a request's dispatch to the device to its completion (read, write, flush); only counted "
    "while metrics are served.";

}  // namespace

RequestKind request_kind(uint16_t command) {
  switch (command) {
    case kCmdRead: return RequestKind::read;
    case kCmdWrite: return RequestKind::write;
    case kCmdFlush: return RequestKind::flush;
    case kCmdTrim: return RequestKind::trim;
    case kCmdCache: return RequestKind::cache;
    case kCmdWriteZeroes: return RequestKind::write_zeroes;
    case kCmdBlockStatus: return RequestKind::block_status;
    default: return RequestKind::unknown;
  }
}

size_t error_index(uint32_t nbd_error) {
  for (size_t i = 0; i < kErrorValues.size(); ++i)
    if (kErrorValues[i] == nbd_error) return i;
  return 1;  // EIO
}

uint32_t nbd_error_of(int error) {
  switch (error) {
    case EPERM:
    case EROFS:
      return kEperm;
    case ENOMEM:
      return kEnomem;
    case EINVAL:
      return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case EOVERFLOW:
      return kEoverflow;
    case ENOTSUP:
      return kEnotsup;
    case ESHUTDOWN:
      return kEshutdown;
    default:
      return kEio;
  }
}

void ExportCounters::failed_errno(RequestKind kind, int error) {
  failed(counters.this_thread_slot(), kind, nbd_error_of(error));
}

ExportCounters::Totals ExportCounters::totals() const {
  const auto c = counters.sums();
  Totals t{c[kRequests + size_t(RequestKind::read)], c[kRequests + size_t(RequestKind::write)],
           c[kBytes + size_t(RequestKind::read)], c[kBytes + size_t(RequestKind::write)], 0};
  for (size_t i = kErrors; i < kErrors + kRequestKinds * kErrorKinds; ++i) t.errors += c[i];
  return t;
}

void ExportCounters::declare(MetricsReport& report) {
  report.declare(kRequestsName, MetricType::counter, kRequestsHelp);
  report.declare(kBytesName, MetricType::counter, kBytesHelp);
  report.declare(kErrorsName, MetricType::counter, kErrorsHelp);
  report.declare(kInFlightName, MetricType::gauge, kInFlightHelp);
  report.declare(kConnectionsName, MetricType::gauge, kConnectionsHelp);
  report.declare(kLatencyName, MetricType::histogram, kLatencyHelp);
}

void ExportCounters::report(MetricsReport& report, const std::string& name) const {
  const auto c = counters.sums();
  for (size_t k = 0; k < kRequestKinds; ++k) {
    // Unknown commands appear once one was seen; every real type always does.
    if (k == size_t(RequestKind::unknown) && c[kRequests + k] == 0) continue;
    report.add(kRequestsName, MetricType::counter, kRequestsHelp, {{"export", name}, {"type", kKindNames[k]}},
               static_cast<double>(c[kRequests + k]));
  }
  for (size_t k = 0; k < kRequestKinds; ++k) {
    if (k == size_t(RequestKind::flush) || k == size_t(RequestKind::block_status) ||
        k == size_t(RequestKind::unknown))
      continue;  // no bytes to speak of
    report.add(kBytesName, MetricType::counter, kBytesHelp, {{"export", name}, {"type", kKindNames[k]}},
               static_cast<double>(c[kBytes + k]));
  }
  for (size_t k = 0; k < kRequestKinds; ++k)
    for (size_t e = 0; e < kErrorKinds; ++e) {
      const uint64_t n = c[kErrors + k * kErrorKinds + e];
      // Every type's EIO always, so that rate() has a series before the first failure; the
      // other errors once they happened.
      if (n == 0 && (e != 1 || k == size_t(RequestKind::unknown))) continue;
      report.add(kErrorsName, MetricType::counter, kErrorsHelp,
                 {{"export", name}, {"type", kKindNames[k]}, {"error", kErrorNames[e]}}, static_cast<double>(n));
    }
  const uint64_t started = c[kStarted], finished = c[kFinished];
  report.add(kInFlightName, MetricType::gauge, kInFlightHelp, {{"export", name}},
             started > finished ? static_cast<double>(started - finished) : 0.0);
  report.add(kConnectionsName, MetricType::gauge, kConnectionsHelp, {{"export", name}},
             connections.load(std::memory_order_relaxed));
  std::array<double, kLatencyBucketBoundsNs.size()> bounds{};
  for (size_t i = 0; i < bounds.size(); ++i) bounds[i] = static_cast<double>(kLatencyBucketBoundsNs[i]) / 1e9;
  for (size_t t = 0; t < kTimedKinds; ++t) {
    const size_t base = kLatency + t * kLatencyStride;
    std::array<uint64_t, kLatencyBuckets> buckets{};
    for (size_t b = 0; b < kLatencyBuckets; ++b) buckets[b] = c[base + b];
    report.add_histogram(kLatencyName, kLatencyHelp, {{"export", name}, {"type", kTimedNames[t]}}, buckets, bounds,
                         static_cast<double>(c[base + kLatencyBuckets]) / 1e9);
  }
}

}  // namespace volgate::nbd
