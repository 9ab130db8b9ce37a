#include "controller/exports/gateway_process.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

#include "common/detached_process.hpp"

namespace volgate::controller {
namespace {

constexpr auto kMinRestartGap = std::chrono::seconds(2);

}  // namespace

GatewayProcess::GatewayProcess(GatewayConfig config)
    : config_(std::move(config)), program_(this_program_path()) {}

void GatewayProcess::start() {
  reap();
  if (pid_ > 0) return;  // ours is still starting
  const auto now = std::chrono::steady_clock::now();
  if (now - last_start_ < kMinRestartGap) return;
  last_start_ = now;

  for (const auto& socket : {config_.control_socket, config_.nbd_socket}) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(socket).parent_path(), ec);
  }
  std::vector<std::string> args = {program_, "serve", "--control", config_.control_socket, "--unix",
                                   config_.nbd_socket};
  if (!config_.socket_group.empty()) {
    args.push_back("--socket-group");
    args.push_back(config_.socket_group);
  }
  // Nothing else of the controller's goes with it (start_detached): an inherited API listening
  // socket (Asio does not make them close-on-exec) would keep the controller's socket taken, so
  // a controller restarted after a crash could not listen on it.
  pid_t pid = -1;
  try {
    pid = start_detached(args, config_.log_file);
  } catch (const std::system_error& e) {
    throw std::system_error(e.code(), "starting the gateway " + program_);
  }
  pid_ = pid;
  spdlog::info("started the gateway (pid {}): control socket {}, NBD socket {}, log {}", pid_,
               config_.control_socket, config_.nbd_socket, config_.log_file);
}

void GatewayProcess::reap() {
  if (pid_ <= 0) return;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    if (r == pid_) spdlog::warn("the gateway (pid {}) {}; see {}", pid_, describe_exit_status(status), config_.log_file);
    pid_ = -1;
  }
}

void GatewayProcess::stop_if_idle(const gateway::control::Health& health) {
  reap();
  if (health.pid <= 0) return;
  if (health.exports > 0) {
    spdlog::info("the gateway (pid {}) keeps serving {} export(s) without the controller", health.pid, health.exports);
    return;
  }
  const auto pid = static_cast<pid_t>(health.pid);
  ::kill(pid, SIGTERM);
  // Ours is reaped; an adopted one (another process's child) is gone when kill(0) says so.
  auto running = [&] {
    if (pid == pid_) {
      reap();
      return pid_ > 0;
    }
    return ::kill(pid, 0) == 0;
  };
  for (int i = 0; i < 100 && running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (running()) spdlog::warn("the gateway (pid {}) did not stop within 5 s of SIGTERM", pid);
}

}  // namespace volgate::controller
