#pragma once
// What `volgate serve` tells systemd when a unit of Type=notify runs it (NOTIFY_SOCKET set;
// without it, nothing is sent). See packaging/systemd/volgate-gateway.service.
#include <sys/types.h>

namespace volgate::gateway {

// Serving: READY=1, with this process as the service's main one.
void notify_ready();
// A hand-over committed: `successor` is the service's main process from now on. Waits (a
// bounded time) until systemd has read it, so that this process's exit, which follows, is not
// taken for the service's end (Restart= would then kill the successor too).
void notify_main_pid(pid_t successor);

}  // namespace volgate::gateway
