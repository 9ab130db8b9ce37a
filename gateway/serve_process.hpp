#pragma once
// What `volgate serve` changes about its own process at start.
#include <sys/resource.h>

namespace volgate::gateway {

// Raises the soft limit on open descriptors to the hard limit: every connection takes one, and
// the usual soft default (1024) would run out before --max-connections (1024 by default) is
// reached. Returns the limit now in force.
rlim_t raise_open_file_limit();

}  // namespace volgate::gateway
