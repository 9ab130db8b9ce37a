#include "controller/metrics/controller_metrics.hpp"

#include <iterator>

#include "controller/domain/attachment.hpp"
#include "controller/domain/volume.hpp"
#include "controller/exports/export_reconciler.hpp"
#include "controller/store/store.hpp"

namespace volgate::controller {
namespace {

constexpr const char* kApi = "volgate_controller_api_requests_total";
constexpr const char* kApiHelp = "REST API requests answered, by method, route pattern and HTTP status code.";
constexpr const char* kFlowsStarted = "volgate_controller_flows_started_total";
constexpr const char* kFlowsStartedHelp = "Flows (create volume, attach, ...) started by this process, by kind.";
constexpr const char* kFlowsFinished = "volgate_controller_flows_finished_total";
constexpr const char* kFlowsFinishedHelp = "Flows that ran every task, by kind.";
constexpr const char* kFlowsReverted = "volgate_controller_flows_reverted_total";
constexpr const char* kFlowsRevertedHelp = "Flows that failed and reverted what they had done, by kind.";
constexpr const char* kFlowDuration = "volgate_controller_flow_duration_seconds";
constexpr const char* kFlowDurationHelp = "From a flow's start to its end (finished or reverted), by kind.";
constexpr const char* kRepairs = "volgate_controller_export_repairs_total";
constexpr const char* kRepairsHelp =
    "What the export reconciler did to the gateway: exports served again (added), exports no attachment "
    "holds removed, repairs that failed.";
constexpr const char* kVolumes = "volgate_controller_volumes";
constexpr const char* kVolumesHelp = "Volumes in the database, by status.";
constexpr const char* kAttachments = "volgate_controller_attachments";
constexpr const char* kAttachmentsHelp = "Volume attachments in the database, by status.";

constexpr VolumeStatus kAllVolumeStatuses[] = {
    VolumeStatus::creating,  VolumeStatus::available, VolumeStatus::reserved, VolumeStatus::attaching,
    VolumeStatus::in_use,    VolumeStatus::detaching, VolumeStatus::extending, VolumeStatus::uploading,
    VolumeStatus::deleting,  VolumeStatus::error,     VolumeStatus::error_deleting, VolumeStatus::backing_up,
    VolumeStatus::restoring_backup};
// Every status, so that each has its series (0 included): a status added to the enum must be
// added here too.
static_assert(std::size(kAllVolumeStatuses) == static_cast<size_t>(VolumeStatus::restoring_backup) + 1);
constexpr AttachmentStatus kAllAttachmentStatuses[] = {AttachmentStatus::reserved, AttachmentStatus::attaching,
                                                       AttachmentStatus::attached, AttachmentStatus::detaching};

std::string_view known_method(std::string_view method) {
  for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
    if (method == m) return m;
  return "other";
}

}  // namespace

ControllerMetrics& ControllerMetrics::process() {
  static ControllerMetrics metrics;
  return metrics;
}

void ControllerMetrics::api_request(std::string_view method, std::string_view route, int status) {
  std::lock_guard lock(mutex_);
  ++api_[{std::string(known_method(method)), std::string(route), status}];
}

void ControllerMetrics::flow_started(const std::string& kind) {
  std::lock_guard lock(mutex_);
  ++flows_[kind].started;
}

void ControllerMetrics::flow_ended(const std::string& kind, FlowEnd end, std::chrono::steady_clock::duration took) {
  const double seconds = std::chrono::duration<double>(took).count();
  size_t bucket = 0;
  while (bucket < kFlowBuckets.size() && seconds > kFlowBuckets[bucket]) ++bucket;
  std::lock_guard lock(mutex_);
  FlowStats& f = flows_[kind];
  ++(end == FlowEnd::finished ? f.finished : f.reverted);
  ++f.buckets[bucket];
  f.seconds += seconds;
}

void ControllerMetrics::export_repairs(const ExportRepairs& repairs) {
  std::lock_guard lock(mutex_);
  exports_added_ += repairs.added;
  exports_removed_ += repairs.removed;
  export_repairs_failed_ += repairs.failed;
}

void ControllerMetrics::report(MetricsReport& report) const {
  report.declare(kApi, MetricType::counter, kApiHelp);
  report.declare(kFlowsStarted, MetricType::counter, kFlowsStartedHelp);
  report.declare(kFlowsFinished, MetricType::counter, kFlowsFinishedHelp);
  report.declare(kFlowsReverted, MetricType::counter, kFlowsRevertedHelp);
  report.declare(kFlowDuration, MetricType::histogram, kFlowDurationHelp);
  std::lock_guard lock(mutex_);
  for (const auto& [key, count] : api_) {
    const auto& [method, route, status] = key;
    report.add(kApi, MetricType::counter, kApiHelp,
               {{"method", method}, {"route", route}, {"code", std::to_string(status)}}, static_cast<double>(count));
  }
  for (const auto& [kind, f] : flows_) {
    const MetricLabels labels{{"kind", kind}};
    report.add(kFlowsStarted, MetricType::counter, kFlowsStartedHelp, labels, static_cast<double>(f.started));
    report.add(kFlowsFinished, MetricType::counter, kFlowsFinishedHelp, labels, static_cast<double>(f.finished));
    report.add(kFlowsReverted, MetricType::counter, kFlowsRevertedHelp, labels, static_cast<double>(f.reverted));
    report.add_histogram(kFlowDuration, kFlowDurationHelp, labels, f.buckets, kFlowBuckets, f.seconds);
  }
  report.add(kRepairs, MetricType::counter, kRepairsHelp, {{"action", "added"}}, static_cast<double>(exports_added_));
  report.add(kRepairs, MetricType::counter, kRepairsHelp, {{"action", "removed"}},
             static_cast<double>(exports_removed_));
  report.add(kRepairs, MetricType::counter, kRepairsHelp, {{"action", "failed"}},
             static_cast<double>(export_repairs_failed_));
}

void report_store_metrics(Store& store, MetricsReport& report) {
  std::map<std::string, uint64_t> volumes, attachments;
  // Every status always has a series (0 when none has it), so that dashboards and alerts see it.
  for (VolumeStatus s : kAllVolumeStatuses) volumes[std::string(to_string(s))] = 0;
  for (AttachmentStatus s : kAllAttachmentStatuses) attachments[std::string(to_string(s))] = 0;
  for (const Volume& v : store.all_volumes()) ++volumes[std::string(to_string(v.status))];
  for (const Attachment& a : store.all_attachments()) ++attachments[std::string(to_string(a.status))];
  report.declare(kVolumes, MetricType::gauge, kVolumesHelp);
  for (const auto& [status, n] : volumes)
    report.add(kVolumes, MetricType::gauge, kVolumesHelp, {{"status", status}}, static_cast<double>(n));
  report.declare(kAttachments, MetricType::gauge, kAttachmentsHelp);
  for (const auto& [status, n] : attachments)
    report.add(kAttachments, MetricType::gauge, kAttachmentsHelp, {{"status", status}}, static_cast<double>(n));
}

}  // namespace volgate::controller
