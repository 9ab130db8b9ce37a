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

}  // namespace volgate::gateway
