#include "gateway/gateway_command.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "common/detached_process.hpp"
#include "gateway/control_client.hpp"

namespace volgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;

// The pid serving the control socket now, or -1 when no one answers (in a hand-over the
// socket's thread is busy: it answers once the hand-over ends).
int64_t serving_pid(const std::string& control_path) {
  try {
    GatewayControlClient::Timeouts timeouts;
    timeouts.call = std::chrono::seconds(2);
    return GatewayControlClient(control_path, timeouts).health().pid;
  } catch (const GatewayControlError&) {
    return -1;
  }
}

}  // namespace

CLI::App* add_gateway_command(CLI::App& app, GatewayCommandOptions& options) {
  auto* gateway = app.add_subcommand("gateway", "Manage a running gateway (volgate serve --control)");
  gateway->require_subcommand(1);
  auto* restart = gateway->add_subcommand(
      "restart",
      "Replace the gateway serving --control with a new process of --binary through a live hand-over\n"
      "(volgate serve --take-over): listeners, exports and every NBD connection move, clients see a\n"
      "pause of milliseconds and no error (TLS connections are closed and reconnect). Exits 0 once\n"
      "the new process serves; 1 if the hand-over failed, in which case the running gateway serves\n"
      "on unchanged. This is what the systemd unit's reload does.");
  restart->add_option("--control", options.control_path, "The running gateway's control socket")
      ->type_name("PATH")
      ->required();
  restart->add_option("--binary", options.binary,
                      "The volgate program the new process runs (default: this one, so running the\n"
                      "newly installed volgate upgrades the gateway)")
      ->type_name("PATH");
  restart->add_option("--log", options.log_file,
                      "Append the new gateway's output (stdout and stderr) to FILE (default: this\n"
                      "command's own, which the new process keeps after it exits)")
      ->type_name("FILE");
  restart->add_option("--threads", options.threads, "The new gateway's worker threads (default: the old one's)")
      ->check(CLI::Range(1, 256));
  restart->add_option("--timeout", options.timeout_s,
                      "Seconds to wait for the new process to take over (it opens every export first:\n"
                      "RBD and iSCSI logins take seconds); past it the new process is stopped and the\n"
                      "old one serves on")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  return gateway;
}

int run_gateway_command(const GatewayCommandOptions& options) {
  const int64_t old_pid = serving_pid(options.control_path);
  if (old_pid < 0) {
    std::fprintf(stderr, "volgate gateway restart: no gateway answers on %s\n", options.control_path.c_str());
    return 1;
  }
  std::string binary = options.binary;
  if (binary.empty()) {
    try {
      binary = this_program_path();
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "volgate gateway restart: %s\n", e.what());
      return 2;
    }
  }
  if (::access(binary.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "volgate gateway restart: %s is not an executable program\n", binary.c_str());
    return 2;
  }
  if (!options.log_file.empty()) {  // said here, with exit status 2, rather than by a failed start
    const int log_fd = ::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
      std::fprintf(stderr, "volgate gateway restart: %s: %s\n", options.log_file.c_str(), std::strerror(errno));
      return 2;
    }
    ::close(log_fd);
  }

  std::vector<std::string> args{binary, "serve", "--take-over", options.control_path};
  if (options.threads) args.insert(args.end(), {"--threads", std::to_string(options.threads)});
  // In a session of its own: the gateway outlives this command and its terminal.
  pid_t child = -1;
  try {
    child = start_detached(args, options.log_file);
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "volgate gateway restart: %s\n", e.what());
    return 1;
  }

  auto taken_over = [&] {
    if (serving_pid(options.control_path) != child) return false;
    std::printf("gateway on %s handed over from pid %lld to pid %d\n", options.control_path.c_str(),
                static_cast<long long>(old_pid), child);
    return true;
  };
  const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(child, &status, WNOHANG) == child) {
      std::fprintf(stderr,
                   "volgate gateway restart: the new gateway %s before taking over; pid %lld serves on\n",
                   describe_exit_status(status).c_str(), static_cast<long long>(old_pid));
      return 1;
    }
    if (taken_over()) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Before it commits, the new process stopping gives everything back to the old one; one that
  // committed just now must be left alone (it serves the clients).
  if (taken_over()) return 0;
  ::kill(child, SIGTERM);
  std::fprintf(stderr, "volgate gateway restart: no hand-over within %u s; stopped the new process (pid %d)\n",
               options.timeout_s, child);
  return 1;
}

}  // namespace volgate::gateway
