#include "gateway/service_manager.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace volgate::gateway {
namespace {

constexpr uint64_t kBarrierTimeoutUs = 5'000'000;

bool under_service_manager() { return std::getenv("NOTIFY_SOCKET") != nullptr; }

void notify(const std::string& state) {
  if (int err = sd_notify(0, state.c_str()); err < 0) spdlog::warn("sd_notify: {}", std::strerror(-err));
}

}  // namespace

void notify_ready() {
  if (under_service_manager()) notify("READY=1\nMAINPID=" + std::to_string(::getpid()));
}

void notify_main_pid(pid_t successor) {
  if (!under_service_manager() || successor <= 0) return;
  notify("MAINPID=" + std::to_string(successor));
  if (int err = sd_notify_barrier(0, kBarrierTimeoutUs); err < 0)
    spdlog::warn("sd_notify_barrier: {}", std::strerror(-err));
}

}  // namespace volgate::gateway
