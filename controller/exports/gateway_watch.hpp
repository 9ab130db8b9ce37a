#pragma once
// A thread that keeps the gateway in step with the controller: it asks the gateway every
// check_interval who it is (its pid), and when that changes (a restart) or every
// repair_interval, runs the export check; when the gateway does not answer, it asks for one to
// be started (when the controller starts its own). While the gateway does not answer, it asks
// again every kDownRecheck for a while (kDownRecheckFor), so a gateway restarted by anyone
// serves its exports again within milliseconds of listening, not at the next check_interval;
// a gateway that stays down is then asked after at check_interval again.
#include <chrono>
#include <condition_variable>
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

  GatewayWatch(GatewayExports& gateway, Actions actions, std::chrono::milliseconds check_interval,
               std::chrono::milliseconds repair_interval);
  ~GatewayWatch() { stop(); }
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

  GatewayExports& gateway_;
  Actions actions_;
  const std::chrono::milliseconds check_interval_;
  const std::chrono::milliseconds repair_interval_;
  int64_t instance_ = -1;  // the gateway's pid when last seen; -1: not reachable
  bool reported_unreachable_ = false;
  std::chrono::steady_clock::time_point last_repair_{};
  std::chrono::steady_clock::time_point down_since_{};  // when it first did not answer

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace volgate::controller
