#include "common/metrics_report.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace volgate {
namespace {

const char* type_name(MetricType type) {
  switch (type) {
    case MetricType::counter: return "counter";
    case MetricType::gauge: return "gauge";
    case MetricType::histogram: return "histogram";
  }
  return "untyped";
}

// HELP text escapes only backslashes and newlines.
std::string escape_help(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void append_sample(std::string& out, std::string_view name, const MetricLabels& labels, double value) {
  out += name;
  out += format_metric_labels(labels);
  out += ' ';
  out += format_metric_value(value);
  out += '\n';
}

}  // namespace

std::string format_metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  if (value == std::trunc(value) && std::fabs(value) < 1e15)
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
  else
    std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

std::string format_metric_labels(const MetricLabels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first;
    out += "=\"";
    for (char c : labels[i].second) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

MetricsReport::Family& MetricsReport::family(std::string_view name, MetricType type, std::string_view help) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    order_.emplace_back(name);
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  } else if (it->second.type != type) {
    throw std::logic_error("metric " + std::string(name) + " reported with two types");
  }
  return it->second;
}

void MetricsReport::declare(std::string_view name, MetricType type, std::string_view help) {
  family(name, type, help);
}

void MetricsReport::add(std::string_view name, MetricType type, std::string_view help,
                        const MetricLabels& labels, double value) {
  append_sample(family(name, type, help).samples, name, labels, value);
}

void MetricsReport::add_histogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                                  std::span<const uint64_t> bucket_counts, std::span<const double> bounds,
                                  double sum) {
  if (bucket_counts.size() != bounds.size() + 1)
    throw std::logic_error("histogram " + std::string(name) + ": one count per bound and one for +Inf");
  std::string& out = family(name, MetricType::histogram, help).samples;
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  MetricLabels with_le = labels;
  with_le.emplace_back("le", "");
  for (size_t i = 0; i < bucket_counts.size(); ++i) {
    cumulative += bucket_counts[i];
    with_le.back().second = i < bounds.size() ? format_metric_value(bounds[i]) : "+Inf";
    append_sample(out, bucket, with_le, static_cast<double>(cumulative));
  }
  append_sample(out, std::string(name) + "_sum", labels, sum);
  append_sample(out, std::string(name) + "_count", labels, static_cast<double>(cumulative));
}

bool MetricsReport::has(std::string_view name) const { return families_.find(name) != families_.end(); }

std::string MetricsReport::text() const {
  std::string out;
  for (const auto& name : order_) {
    const Family& f = families_.find(name)->second;
    out += "# HELP " + name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + name + " " + type_name(f.type) + "\n";
    out += f.samples;
  }
  return out;
}

}  // namespace volgate
