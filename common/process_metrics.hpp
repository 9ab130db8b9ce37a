#pragma once
// The process's own metrics under the names every Prometheus client library gives them
// (process_cpu_seconds_total, process_resident_memory_bytes, ...), so that stock dashboards and
// alerts work with volgate too, and its thread count.
#include "common/metrics_report.hpp"

namespace volgate {

// Reads /proc/self and getrusage(); a value that cannot be read is left out.
void report_process_metrics(MetricsReport& report);

}  // namespace volgate
