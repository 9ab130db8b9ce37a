#pragma once
// What `volgate serve` changes about its own process before it opens any export.
#include <sys/resource.h>

namespace volgate::gateway {

// No core dumps, and no /proc/PID/mem, ptrace or /proc/PID/environ for other processes of the
// same user: PR_SET_DUMPABLE 0 plus a core size limit of 0 (the limit also covers a core
// pattern that pipes to a helper that would honour it). Throws std::system_error if the kernel
// refuses either.
void make_undumpable();

// Raises the soft limit on open descriptors to the hard limit: every connection takes one, and
// the usual soft default (1024) would run out before --max-connections (1024 by default) is
// reached. Returns the limit now in force.
rlim_t raise_open_file_limit();

// Starts this program again (same argv, same process id) with glibc's per-thread cache limited
// to chunks of at most kTcacheMaxBytes, unless GLIBC_TUNABLES already names tcache_max (then,
// or when the exec fails, it returns and the process goes on as it is). glibc reads its
// tunables only when a program starts, so this must run first thing in `volgate serve`, before
// any thread exists. Why: librados' messenger threads receive each read reply into a fresh
// 4 KiB-aligned buffer of the reply's size; the small objects they allocate between those
// buffers are freed on other threads (librbd's, ours), into those threads' caches, which keep
// them as if in use and hand them out again there. They pin the middle of the messenger's
// arena, whose freed buffers then cannot merge into the next aligned one, and the arena grows
// to its 64 MiB maximum. Measured (volgate serve rbd:, memstore OSD, fio 1 MiB sequential reads
// at depth 16, glibc 2.36): peak RSS 127-151 MiB with the defaults, 80-82 MiB with tcache_max
// at 128 bytes or the cache off, against 42 MiB at rest; no change in CPU per GiB beyond the
// noise. No mallopt() setting reaches the cache; fixing mmap_threshold or trim_threshold
// bounds the arena too but maps and faults every 1 MiB buffer in anew (CPU per GiB doubled),
// and fewer arenas (MALLOC_ARENA_MAX) made it worse.
inline constexpr unsigned kTcacheMaxBytes = 128;
void restart_with_malloc_settings(char** argv);

}  // namespace volgate::gateway
