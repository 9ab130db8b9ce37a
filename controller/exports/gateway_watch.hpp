#pragma once
// A thread that keeps the gateway in step with the controller: it asks the gateway every
// check_interval who it is (its pid), and when that changes (a restart) or every
// repair_interval, runs the export check; when the gateway does not answer, it asks for one to
// be started (when the controller starts its own).
// The crash window is kept short at both ends. The watch holds a pidfd on the gateway it saw,
// so a gateway that dies (whoever started it: this controller, systemd) is looked at again at
// once, not at the next check_interval. And while the gateway does not answer, it asks again
// every kDownRecheck for a while (kDownRecheckFor), so a restarted gateway serves its exports
// again within milliseconds of listening; one that stays down is then asked every
// check_interval again.
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "controller/exports/gateway_exports.hpp"

namespace volgate::controller {

class GatewayWatch {
 public:
  struct Actions {
    std::function<void()> reconcile;    // the export check; may throw (logged)
    std::function<void()> unreachable;  // the gateway did not answer; may be empty
  };

  // Throws std::system_error when it cannot make its wake-up descriptor.
  GatewayWatch(GatewayExports& gateway, Actions actions, std::chrono::milliseconds check_interval,
               std::chrono::milliseconds repair_interval);
  ~GatewayWatch();
  GatewayWatch(const GatewayWatch&) = delete;
  GatewayWatch& operator=(const GatewayWatch&) = delete;

  void start();
  void stop();

  static constexpr std::chrono::milliseconds kDownRecheck{25};
  static constexpr std::chrono::seconds kDownRecheckFor{10};

 private:
  void run();
  // One look at the gateway; returns how long to wait before the next.
  std::chrono::milliseconds check();
  // Watches process `pid` for its exit (a pidfd); none when it cannot (another pid namespace).
  void follow(int64_t pid);

  GatewayExports& gateway_;
  Actions actions_;
  const std::chrono::milliseconds check_interval_;
  const std::chrono::milliseconds repair_interval_;
  int64_t instance_ = -1;  // the gateway's pid when last seen; -1: not reachable
  bool reported_unreachable_ = false;
  std::chrono::steady_clock::time_point last_repair_{};
  std::chrono::steady_clock::time_point down_since_{};  // when it first did not answer
  int gateway_pidfd_ = -1;  // readable once the gateway last seen has exited
  int followed_pid_ = -1;

  int stop_fd_ = -1;  // an eventfd: readable once stop() was called
  std::mutex mutex_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace volgate::controller
