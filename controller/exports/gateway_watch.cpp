#include "controller/exports/gateway_watch.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace volgate::controller {

GatewayWatch::GatewayWatch(GatewayExports& gateway, Actions actions, std::chrono::milliseconds check_interval,
                           std::chrono::milliseconds repair_interval)
    : gateway_(gateway),
      actions_(std::move(actions)),
      check_interval_(check_interval),
      repair_interval_(repair_interval) {
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for the gateway watch");
}

GatewayWatch::~GatewayWatch() {
  stop();
  if (gateway_pidfd_ >= 0) ::close(gateway_pidfd_);
  ::close(stop_fd_);
}

void GatewayWatch::start() { thread_ = std::thread([this] { run(); }); }

void GatewayWatch::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void GatewayWatch::run() {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    const auto wait = check();
    pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {gateway_pidfd_, POLLIN, 0}};
    const int n = ::poll(fds, gateway_pidfd_ >= 0 ? 2 : 1, static_cast<int>(wait.count()));
    if (n > 0 && gateway_pidfd_ >= 0 && fds[1].revents != 0) {
      // The gateway exited: look now (the next check finds it gone, or its successor).
      ::close(gateway_pidfd_);
      gateway_pidfd_ = -1;
      followed_pid_ = -1;
    }
  }
}

void GatewayWatch::follow(int64_t pid) {
  if (pid == followed_pid_ && gateway_pidfd_ >= 0) return;
  if (gateway_pidfd_ >= 0) ::close(gateway_pidfd_);
  gateway_pidfd_ = -1;
  followed_pid_ = static_cast<int>(pid);
  // A pid from another pid namespace (a gateway in a container) is not ours to open: the
  // check_interval alone notices its exit then.
  // (glibc 2.36's <sys/pidfd.h> declares pidfd_open without C linkage for C++: the system call.
  // Its descriptor is close-on-exec.)
  if (pid > 0) gateway_pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
}

std::chrono::milliseconds GatewayWatch::check() {
  int64_t instance = -1;
  const auto now = std::chrono::steady_clock::now();
  try {
    instance = gateway_.instance();
  } catch (const std::exception& e) {
    if (!reported_unreachable_) {
      spdlog::warn("the gateway does not answer: {}", e.what());
      down_since_ = now;
    }
    reported_unreachable_ = true;
    instance_ = -1;
    if (actions_.unreachable) {
      try {
        actions_.unreachable();
      } catch (const std::exception& e) {
        spdlog::error("could not start the gateway: {}", e.what());
      }
    }
    // Whoever restarts it (this controller, systemd), its exports are put back as soon as it
    // answers: a connect to a unix socket nobody listens on costs microseconds.
    return now - down_since_ < kDownRecheckFor ? std::min<std::chrono::milliseconds>(kDownRecheck, check_interval_)
                                               : check_interval_;
  }
  reported_unreachable_ = false;
  follow(instance);
  if (instance == instance_ && now - last_repair_ < repair_interval_) return check_interval_;
  if (instance != instance_) spdlog::info("gateway pid {}: checking that it serves every attached volume", instance);
  try {
    actions_.reconcile();
    instance_ = instance;  // only once done: a pass that failed is tried again at once
    last_repair_ = now;
  } catch (const std::exception& e) {
    spdlog::error("export check failed: {}", e.what());
  }
  return check_interval_;
}

}  // namespace volgate::controller
