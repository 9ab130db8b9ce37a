#include "common/process_metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace volgate {
namespace {

// Entries of a /proc directory, without . and ..
std::optional<size_t> count_entries(const char* path) {
  DIR* dir = ::opendir(path);
  if (!dir) return std::nullopt;
  size_t n = 0;
  while (const dirent* e = ::readdir(dir))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  ::closedir(dir);
  return n;
}

// When the process started, in seconds since the epoch: the boot time (/proc/stat btime) plus
// field 22 of /proc/self/stat (clock ticks after boot).
std::optional<double> start_time() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  const size_t paren = line.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(paren + 2));
  std::string field;
  unsigned long long ticks = 0;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) ticks = std::stoull(field);
  std::ifstream proc_stat("/proc/stat");
  unsigned long long btime = 0;
  while (std::getline(proc_stat, line))
    if (line.rfind("btime ", 0) == 0) btime = std::stoull(line.substr(6));
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (btime == 0 || ticks == 0 || hz <= 0) return std::nullopt;
  return static_cast<double>(btime) + static_cast<double>(ticks) / static_cast<double>(hz);
}

}  // namespace

void report_process_metrics(MetricsReport& report) {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    report.add("process_cpu_seconds_total", MetricType::counter, "User and system CPU time spent, in seconds.",
               {}, cpu);
  }
  unsigned long long pages_total = 0, pages_resident = 0;
  if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(statm, "%llu %llu", &pages_total, &pages_resident) == 2) {
      const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
      report.add("process_resident_memory_bytes", MetricType::gauge, "Resident memory size, in bytes.", {},
                 static_cast<double>(pages_resident) * page);
      report.add("process_virtual_memory_bytes", MetricType::gauge, "Virtual memory size, in bytes.", {},
                 static_cast<double>(pages_total) * page);
    }
    std::fclose(statm);
  }
  if (auto fds = count_entries("/proc/self/fd"))
    report.add("process_open_fds", MetricType::gauge, "Open file descriptors.", {},
               static_cast<double>(*fds - 1));  // less the one reading the directory
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0)
    report.add("process_max_fds", MetricType::gauge, "The most file descriptors that may be open (soft limit).",
               {}, limit.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(limit.rlim_cur));
  if (auto started = start_time())
    report.add("process_start_time_seconds", MetricType::gauge,
               "When the process started, in seconds since the Unix epoch.", {}, *started);
  if (auto threads = count_entries("/proc/self/task"))
    report.add("volgate_process_threads", MetricType::gauge, "Threads of the process.", {},
               static_cast<double>(*threads));
}

}  // namespace volgate
