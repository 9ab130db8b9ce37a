#pragma once
// What the controller counts for its /metrics endpoint: API requests by route and status,
// flows started, finished and reverted by kind with their durations, and the export
// reconciler's repairs. Volumes and attachments by status are read from the store at scrape
// time (see report_store_metrics).
//
// One record per process: the API, the flow engine and the reconciler count into it from
// whatever thread runs them. Nothing here is on a data path (a request or a flow takes
// milliseconds to minutes), so a mutex guards it.
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "common/metrics_report.hpp"

namespace volgate::controller {

class Store;
struct ExportRepairs;

class ControllerMetrics {
 public:
  enum class FlowEnd { finished, reverted };
  // Upper bounds of the flow-duration buckets, in seconds.
  static constexpr std::array<double, 12> kFlowBuckets{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120};

  static ControllerMetrics& process();

  // `route` is the pattern the request matched ("/v3/{project_id}/volumes/{volume_id}"), or a
  // word for one that matched none; methods outside HTTP's usual ones count as "other".
  void api_request(std::string_view method, std::string_view route, int status);
  void flow_started(const std::string& kind);
  void flow_ended(const std::string& kind, FlowEnd end, std::chrono::steady_clock::duration took);
  void export_repairs(const ExportRepairs& repairs);

  void report(MetricsReport& report) const;

 private:
  struct FlowStats {
    uint64_t started = 0;
    uint64_t finished = 0;
    uint64_t reverted = 0;
    std::array<uint64_t, kFlowBuckets.size() + 1> buckets{};
    double seconds = 0;
  };

  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> api_;
  std::map<std::string, FlowStats> flows_;
  uint64_t exports_added_ = 0;
  uint64_t exports_removed_ = 0;
  uint64_t export_repairs_failed_ = 0;
};

// Volumes and attachments by status, counted in the store now.
void report_store_metrics(Store& store, MetricsReport& report);

}  // namespace volgate::controller
