#pragma once
// The upper bounds of the latency histograms the gateway exports, from a RAM disk's tens of
// microseconds to a storage network's seconds, in Prometheus' cumulative "le" convention. A
// histogram is kept as one count per bucket (the last one past every bound, +Inf) plus the
// sum of the observations in nanoseconds, all of them plain counters (see ThreadCounters).
#include <array>
#include <cstddef>
#include <cstdint>

namespace volgate {

inline constexpr std::array<uint64_t, 18> kLatencyBucketBoundsNs{
    25'000,        50'000,        100'000,        250'000,      500'000,      1'000'000,
    2'500'000,     5'000'000,     10'000'000,     25'000'000,   50'000'000,   100'000'000,
    250'000'000,   500'000'000,   1'000'000'000,  2'500'000'000, 5'000'000'000, 10'000'000'000};
// Buckets per histogram: one per bound, and +Inf.
inline constexpr size_t kLatencyBuckets = kLatencyBucketBoundsNs.size() + 1;

// The bucket an observation of `ns` falls in: the first whose bound is at least `ns`.
constexpr size_t latency_bucket(uint64_t ns) {
  size_t i = 0;
  while (i < kLatencyBucketBoundsNs.size() && ns > kLatencyBucketBoundsNs[i]) ++i;
  return i;
}

}  // namespace volgate
