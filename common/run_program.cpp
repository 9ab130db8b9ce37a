#include "common/run_program.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "common/unique_fd.hpp"

extern char** environ;

namespace volgate {

ProgramResult run_program(const std::vector<std::string>& argv_text, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& environment, size_t max_output,
                          std::span<const int> inherited, const std::atomic<bool>* cancel) {
  std::vector<const char*> argv;
  for (const auto& a : argv_text) argv.push_back(a.c_str());
  return run_program(std::span<const char* const>(argv), timeout, environment, max_output, inherited, cancel);
}

ProgramResult run_program(std::span<const char* const> argv_given, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& environment, size_t max_output,
                          std::span<const int> inherited, const std::atomic<bool>* cancel) {
  if (argv_given.empty()) throw std::invalid_argument("run_program: no program");
  // posix_spawn copies the arguments into the new process and never writes through them.
  std::vector<char*> argv;
  for (const char* a : argv_given) argv.push_back(const_cast<char*>(a));
  argv.push_back(nullptr);
  // An entry's name: what comes before its '=' (all of it for a bare NAME, which removes).
  auto name_of = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) {
    const std::string_view entry(*e);
    bool replaced = false;
    for (const auto& mine : environment) replaced = replaced || name_of(entry) == name_of(mine);
    if (!replaced) env_text.emplace_back(entry);
  }
  for (const auto& mine : environment)
    if (mine.find('=') != std::string::npos) env_text.push_back(mine);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  // Each inherited descriptor is first duplicated above the numbers it goes to, so that placing
  // one never overwrites another still to be placed (dup2 onto a new number also clears
  // close-on-exec). Every other descriptor is closed in the child: not all of this process's
  // are close-on-exec (asio's sockets are not), and a program parsing untrusted input
  // (qemu-img on an image) must not hold the API's listening socket or its clients'
  // connections, nor keep that socket busy for a controller started again after a crash.
  const int first_inherited = 3;
  const int above = first_inherited + static_cast<int>(inherited.size());
  std::vector<UniqueFd> staged;
  for (int fd : inherited) {
    int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, above);
    if (copy < 0) throw std::system_error(errno, std::generic_category(), "duplicate a descriptor for a program");
    staged.emplace_back(copy);
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  for (size_t i = 0; i < staged.size(); ++i)
    posix_spawn_file_actions_adddup2(&actions, staged[i].get(), first_inherited + static_cast<int>(i));
  posix_spawn_file_actions_addclosefrom_np(&actions, above);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    throw std::system_error(rc, std::generic_category(), std::string("run ") + argv_given[0]);
  }
  ProgramResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  constexpr std::chrono::milliseconds kCancelCheck{100};
  auto cancel_now = [&] {
    if (!cancel || !cancel->load() || result.cancelled || result.timed_out) return false;
    result.cancelled = true;
    ::kill(pid, SIGKILL);
    return true;
  };
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (cancel_now()) break;
    pollfd p{out[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(cancel ? std::min(left, kCancelCheck).count() : left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline is checked at the top
    const ssize_t n = ::read(out[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const size_t room = max_output - result.output.size();
    if (static_cast<size_t>(n) > room) result.output_truncated = true;
    result.output.append(buffer, std::min(room, static_cast<size_t>(n)));
  }
  ::close(out[0]);
  // A program that closed its output may still run: it gets what is left of the time.
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid || (done < 0 && errno != EINTR)) break;
    if (done == 0 && std::chrono::steady_clock::now() >= deadline && !result.timed_out && !result.cancelled) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    if (done == 0) cancel_now();
    if (done == 0) ::usleep(10'000);
  }
  if (!result.timed_out && !result.cancelled && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

}  // namespace volgate
