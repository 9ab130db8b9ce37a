#pragma once
// The gateway that `volgate controller --gateway` starts: `volgate serve --control SOCKET
// --unix NBD_SOCKET` from this same binary, in a session of its own with its output in a log
// file. It is started only when no gateway answers on the control socket, so a controller that
// restarts adopts the gateway already serving its guests instead of replacing it.
#include <sys/types.h>

#include <chrono>
#include <string>

#include "controller/controller_config.hpp"
#include "gateway/control_protocol.hpp"

namespace volgate::controller {

class GatewayProcess {
 public:
  explicit GatewayProcess(GatewayConfig config);

  // Starts a gateway (at most once per few seconds, so one that dies at start is not restarted
  // in a tight loop). Call when the control socket does not answer. Throws on a failure to spawn.
  void start();
  // Collects a gateway this process started that has exited, and logs how it ended.
  void reap();
  // When the controller stops: the gateway it runs with (started here or adopted), if it serves
  // no export, is stopped (SIGTERM, then waited for); one with exports keeps serving them
  // without the controller, since a guest may be using them (or about to connect).
  void stop_if_idle(const gateway::control::Health& health);

  pid_t pid() const { return pid_; }

 private:
  GatewayConfig config_;
  std::string program_;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point last_start_{};
};

}  // namespace volgate::controller
