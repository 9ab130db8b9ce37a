#include "gateway/serve_process.hpp"

#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>

namespace volgate::gateway {

void make_undumpable() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    throw std::system_error(errno, std::generic_category(), "prctl(PR_SET_DUMPABLE, 0)");
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0)
    throw std::system_error(errno, std::generic_category(), "setrlimit(RLIMIT_CORE, 0)");
}

rlim_t raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur == limit.rlim_max) return limit.rlim_cur;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : before;
}

void restart_with_malloc_settings(char** argv) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // (Sanitizer builds bring their own allocator, which has no such cache.)
  const char* before = std::getenv("GLIBC_TUNABLES");
  const std::string tunables = before ? before : "";
  if (tunables.find("glibc.malloc.tcache_max=") != std::string::npos) return;
  const std::string ours = "glibc.malloc.tcache_max=" + std::to_string(kTcacheMaxBytes);
  if (::setenv("GLIBC_TUNABLES", (tunables.empty() ? ours : tunables + ":" + ours).c_str(), 1) != 0) return;
  // The program's own path, so that the process keeps its name (a process started through
  // /proc/self/exe is called "exe"); that link is the fallback if the file has gone.
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) {
    path[n] = '\0';
    ::execv(path, argv);
  }
  ::execv("/proc/self/exe", argv);
  // Not restarted: carry on with glibc's defaults (more memory, nothing else changes).
  if (before)
    ::setenv("GLIBC_TUNABLES", before, 1);
  else
    ::unsetenv("GLIBC_TUNABLES");
#else
  (void)argv;
#endif
}

}  // namespace volgate::gateway
