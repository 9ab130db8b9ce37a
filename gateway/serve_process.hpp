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
// at depth 16, glibc 2.36, 42 MiB at rest): peak RSS 118-151 MiB with the defaults (cached
// chunks up to 1032 bytes); with tcache_max at 768 bytes 105-113, 512: 96-100, 256: 89-91,
// 128: 80-85, the cache off: 80-86. Writes and 4 KiB requests stay at 43-80 MiB either way.
// CPU per GiB, 4 interleaved runs each on a busy 2-core host, old / new: seq-read 0.581 /
// 0.592, seq-write 0.632 / 0.658, rand-read 11.6 / 12.4, rand-write 17.3 / 18.5; an earlier set
// had the new one lower on every row: within the runs' spread (10-30 %) both ways. No mallopt()
// setting reaches the cache; fixing mmap_threshold or trim_threshold bounds the arena too but
// maps and faults every 1 MiB buffer in anew (CPU per GiB doubled), fewer arenas
// (MALLOC_ARENA_MAX 1, 2, 4) made it worse (151-178 MiB), and tcmalloc preloaded (82-88 MiB)
// took 4 MiB more at rest and, in two runs, 10-30 % more CPU per GiB on a file export's writes.
inline constexpr unsigned kTcacheMaxBytes = 128;
void restart_with_malloc_settings(char** argv);

}  // namespace volgate::gateway
