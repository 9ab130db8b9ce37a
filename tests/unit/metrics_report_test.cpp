#include "common/metrics_report.hpp"

#include <gtest/gtest.h>

#include <array>

namespace volgate {
namespace {

TEST(MetricsReport, GroupsEachFamilyUnderOneHelpAndType) {
  MetricsReport r;
  r.add("a_total", MetricType::counter, "Some a.", {{"export", "x"}}, 3);
  r.add("b", MetricType::gauge, "Some b.", {}, 1.5);
  r.add("a_total", MetricType::counter, "Some a.", {{"export", "y"}}, 4);
  EXPECT_EQ(r.text(),
            "# HELP a_total Some a.\n# TYPE a_total counter\n"
            "a_total{export=\"x\"} 3\na_total{export=\"y\"} 4\n"
            "# HELP b Some b.\n# TYPE b gauge\nb 1.5\n");
}

TEST(MetricsReport, DeclaredFamilyWithoutSamplesKeepsItsLines) {
  MetricsReport r;
  r.declare("c_total", MetricType::counter, "None yet.");
  EXPECT_TRUE(r.has("c_total"));
  EXPECT_FALSE(r.has("d_total"));
  EXPECT_EQ(r.text(), "# HELP c_total None yet.\n# TYPE c_total counter\n");
}

TEST(MetricsReport, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(format_metric_labels({{"export", "a\"b\\c\nd"}}), "{export=\"a\\\"b\\\\c\\nd\"}");
  MetricsReport r;
  r.add("e", MetricType::gauge, "line\\one\nline two", {}, 0);
  EXPECT_EQ(r.text(), "# HELP e line\\\\one\\nline two\n# TYPE e gauge\ne 0\n");
}

TEST(MetricsReport, FormatsValues) {
  EXPECT_EQ(format_metric_value(0), "0");
  EXPECT_EQ(format_metric_value(18446744073709.0), "18446744073709");
  EXPECT_EQ(format_metric_value(2.5e-05), "2.5e-05");
  EXPECT_EQ(format_metric_value(1.0 / 0.0), "+Inf");
}

TEST(MetricsReport, HistogramBucketsAreCumulative) {
  MetricsReport r;
  const std::array<uint64_t, 3> counts{2, 0, 1};
  const std::array<double, 2> bounds{0.001, 0.5};
  r.add_histogram("h_seconds", "H.", {{"type", "read"}}, counts, bounds, 0.75);
  EXPECT_EQ(r.text(),
            "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{type=\"read\",le=\"0.001\"} 2\n"
            "h_seconds_bucket{type=\"read\",le=\"0.5\"} 2\n"
            "h_seconds_bucket{type=\"read\",le=\"+Inf\"} 3\n"
            "h_seconds_sum{type=\"read\"} 0.75\n"
            "h_seconds_count{type=\"read\"} 3\n");
}

TEST(MetricsReport, RefusesOneNameWithTwoTypes) {
  MetricsReport r;
  r.add("x", MetricType::gauge, "X.", {}, 1);
  EXPECT_THROW(r.add("x", MetricType::counter, "X.", {}, 1), std::logic_error);
}

}  // namespace
}  // namespace volgate
