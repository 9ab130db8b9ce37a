#include "controller/doctor/system_checks.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/timex.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace volgate::controller::doctor {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<uint64_t> number(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  return value;
}

std::string mib(uint64_t kib) { return std::to_string(kib / 1024) + " MiB"; }

// The cgroup (v2) this process is in, from /proc/self/cgroup's "0::/PATH" line.
std::string own_cgroup_dir() {
  std::istringstream in(read_text("/proc/self/cgroup"));
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("0::")) return "/sys/fs/cgroup" + line.substr(3);
  return "";
}

}  // namespace

std::optional<uint64_t> available_memory_kib(const std::string& meminfo, const std::string& cgroup_max,
                                             const std::string& cgroup_current) {
  std::optional<uint64_t> available;
  std::istringstream in(meminfo);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("MemAvailable:")) available = number(std::string_view(line).substr(13));
  if (!available) return std::nullopt;
  auto limit = number(cgroup_max), used = number(cgroup_current);
  if (limit && used) {
    const uint64_t left_kib = *limit > *used ? (*limit - *used) / 1024 : 0;
    if (left_kib < *available) available = left_kib;
  }
  return available;
}

Finding pbkdf_memory_finding(std::optional<uint64_t> available_kib, uint64_t needed_kib) {
  Finding f{.check = "PBKDF memory"};
  if (!available_kib) {
    f.severity = Severity::warning;
    f.what = "cannot tell how much memory is available (no MemAvailable in /proc/meminfo)";
    f.fix = "make sure " + mib(needed_kib) + " are free for each LUKS2 volume being opened";
    return f;
  }
  f.what = mib(*available_kib) + " available; opening a LUKS2 volume with Argon2 takes up to " + mib(needed_kib);
  if (*available_kib < needed_kib) {
    f.severity = Severity::failure;
    f.fix = "free memory or raise the cgroup's memory.max; or format volumes with less (volgate luks format "
            "--pbkdf-memory KIB, or --pbkdf pbkdf2, as the controller's own volumes are)";
  }
  return f;
}

Finding check_pbkdf_memory(uint64_t needed_kib) {
  const std::string cgroup = own_cgroup_dir();
  return pbkdf_memory_finding(
      available_memory_kib(read_text("/proc/meminfo"), cgroup.empty() ? "" : read_text(cgroup + "/memory.max"),
                           cgroup.empty() ? "" : read_text(cgroup + "/memory.current")),
      needed_kib);
}

Finding clock_finding(std::time_t now, bool synchronised) {
  // 2026-01-01T00:00:00Z: no clock that reads earlier is right, since this code is younger.
  constexpr std::time_t kOldestPossible = 1767225600;
  Finding f{.check = "clock"};
  char text[32] = "?";
  std::tm utc{};
  if (::gmtime_r(&now, &utc)) std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  f.what = std::string("the time is ") + text;
  if (now < kOldestPossible) {
    f.severity = Severity::failure;
    f.what += ", before this program was written";
    f.fix = "set the clock (date -s, or an NTP client such as chrony or systemd-timesyncd): TLS certificates, "
            "Ceph's cephx tickets and every log depend on it";
  } else if (!synchronised) {
    f.severity = Severity::warning;
    f.what += "; the kernel says no time service keeps it synchronised";
    f.fix = "run an NTP client (chrony, systemd-timesyncd): Ceph refuses hosts whose clocks drift apart, and "
            "certificates look expired or not yet valid";
  }
  return f;
}

Finding check_clock() {
  timex tx{};  // modes 0: only reads
  const int state = ::adjtimex(&tx);
  const bool synchronised = state != TIME_ERROR && !(tx.status & STA_UNSYNC);
  return clock_finding(std::time(nullptr), synchronised);
}

Finding check_fuse(bool required, const std::string& device) {
  Finding f{.check = "FUSE"};
  const Severity problem = required ? Severity::failure : Severity::warning;
  struct stat st{};
  const bool exists = ::stat(device.c_str(), &st) == 0;
  if (!exists || !S_ISCHR(st.st_mode)) {
    f.severity = problem;
    f.what = device + (exists ? " is not a character device" : " does not exist");
    f.fix = "volgate serve --fuse needs FUSE: load the fuse module (modprobe fuse), or give a container "
            "--device /dev/fuse";
    return f;
  }
  const int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    f.severity = problem;
    f.what = "cannot open " + device + ": " + std::strerror(error);
    f.fix = "volgate serve --fuse needs to open it: run as root, or install fuse3 (its fusermount3 opens it for "
            "other users)";
    if (::geteuid() != 0 && ::access("/usr/bin/fusermount3", X_OK) == 0) {
      f.severity = Severity::ok;  // non-root users mount through fusermount3, which is setuid
      f.what = device + " is opened for this user by fusermount3";
      f.fix.clear();
    }
    return f;
  }
  ::close(fd);
  f.what = device + " opens read-write";
  if (::geteuid() != 0 && ::access("/usr/bin/fusermount3", X_OK) != 0) {
    f.severity = problem;
    f.what += ", but fusermount3 is missing (users other than root mount through it)";
    f.fix = "apt-get install fuse3";
  }
  if (!required && f.severity == Severity::ok) f.what += " (for volgate serve --fuse)";
  return f;
}

}  // namespace volgate::controller::doctor
