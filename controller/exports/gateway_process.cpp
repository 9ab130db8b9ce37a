#include "controller/exports/gateway_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

extern char** environ;

namespace volgate::controller {
namespace {

constexpr auto kMinRestartGap = std::chrono::seconds(2);

std::string how_it_ended(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
  return "ended";
}

}  // namespace

GatewayProcess::GatewayProcess(GatewayConfig config) : config_(std::move(config)) {
  // This binary, resolved now: a package upgrade that replaces the file later starts the new one.
  std::error_code ec;
  program_ = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) throw std::system_error(ec, "cannot find this program's path (/proc/self/exe)");
}

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
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, config_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  // Nothing else of the controller's: the gateway outlives it, and an inherited API listening
  // socket (Asio does not make them close-on-exec) would keep the controller's socket taken, so
  // a controller restarted after a crash could not listen on it.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  // A session of its own: a Ctrl-C meant for the controller does not reach the gateway.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, program_.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "starting the gateway " + program_);
  pid_ = pid;
  spdlog::info("started the gateway (pid {}): control socket {}, NBD socket {}, log {}", pid_,
               config_.control_socket, config_.nbd_socket, config_.log_file);
}

void GatewayProcess::reap() {
  if (pid_ <= 0) return;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    if (r == pid_) spdlog::warn("the gateway (pid {}) {}; see {}", pid_, how_it_ended(status), config_.log_file);
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
