#pragma once
// One scrape's worth of metrics, written in the Prometheus text exposition format (version
// 0.0.4): each family once, with its HELP and TYPE lines and then all its samples, whatever
// order the samples were added in (a family's samples must not be split in the text).
//
// Whoever reports adds samples under a family name; the first sample (or declare()) names the
// family's type and help. Names and label names are the caller's constants; label values may
// be anything (export names come from users) and are escaped.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace volgate {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { counter, gauge, histogram };

class MetricsReport {
 public:
  // A family with its HELP and TYPE lines even when no sample follows (say, iSCSI path
  // metrics of a gateway that serves no iSCSI export), so that dashboards and alerts find it.
  void declare(std::string_view name, MetricType type, std::string_view help);
  // A counter's name ends in _total (the caller's job); a gauge's does not.
  void add(std::string_view name, MetricType type, std::string_view help, const MetricLabels& labels,
           double value);
  // A histogram from per-bucket (not cumulative) counts, one per bound plus the last for +Inf.
  void add_histogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                     std::span<const uint64_t> bucket_counts, std::span<const double> bounds,
                     double sum);

  bool has(std::string_view name) const;
  std::string text() const;

 private:
  struct Family {
    MetricType type;
    std::string help;
    std::string samples;  // already rendered lines
  };
  Family& family(std::string_view name, MetricType type, std::string_view help);

  std::vector<std::string> order_;
  std::map<std::string, Family, std::less<>> families_;
};

// The value as the exposition format writes it: integers without a fraction, +Inf, NaN.
std::string format_metric_value(double value);
// {a="x",b="y"}, with \, " and newlines escaped; empty for no labels.
std::string format_metric_labels(const MetricLabels& labels);

}  // namespace volgate
