#pragma once
// A flush of exports' devices from a thread that is none of the server's (the control API's,
// when an export is removed or the gateway hands over), on a private io_context: the workers'
// may be busy, paused or gone. Bounded: storage that does not answer in time is left to finish
// on its own (its completion keeps the io_context it needs).
#include <chrono>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "nbd/export.hpp"

namespace volgate::nbd {

// How long an export's last flush may take, when it is removed or the server stops: the
// gateway's unit gives a stop 30 s (TimeoutStopSec), of which the drain of connections takes at
// most 10, so a stop that gives up on its storage says so before systemd kills the process.
inline constexpr std::chrono::seconds kFinalFlushTimeout{15};

struct FlushOutcome {
  std::vector<std::pair<std::string, std::error_code>> failed;  // export name, error
  std::vector<std::string> unanswered;                          // not done within the timeout
  bool ok() const { return failed.empty() && unanswered.empty(); }
};

FlushOutcome flush_exports(const std::vector<std::shared_ptr<const Export>>& exports,
                           std::chrono::milliseconds timeout);

}  // namespace volgate::nbd
