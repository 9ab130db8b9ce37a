#pragma once
// Runs a program and takes what it says (tgtadm for the iSCSI pools, qemu -device help for the
// doctor), bounded in time and in output: a hung program is killed, so no caller hangs on it.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace volgate {

struct ProgramResult {
  int exit_code = -1;       // -1: killed (timeout, cancelled) or ended by a signal
  bool timed_out = false;
  bool cancelled = false;   // killed because `cancel` became true
  std::string output;       // standard output and error together (at most max_output bytes)
  bool output_truncated = false;
};

constexpr size_t kDefaultMaxProgramOutput = size_t{1} << 20;

// argv[0] is looked up in PATH. `environment`: NAME=VALUE entries added to (or replacing those
// of) this process's; a bare NAME removes that variable. Standard input is /dev/null. Throws std::system_error when the program
// cannot be started. The pointer form lets an argument live in wiped memory (a password): it is
// never copied into a string here. `inherited`: this process's descriptors the program gets, as
// descriptors 3, 4, ... in that order (so that it can be told /dev/fd/3 for a file this process
// opened, and reach it by no path). No other descriptor of this process reaches it.
// `cancel`, when given, is looked at every 100 ms: once true, the program is killed (a stopping
// controller does not wait for a conversion that may take an hour).
ProgramResult run_program(std::span<const char* const> argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& environment = {},
                          size_t max_output = kDefaultMaxProgramOutput, std::span<const int> inherited = {},
                          const std::atomic<bool>* cancel = nullptr);
ProgramResult run_program(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& environment = {},
                          size_t max_output = kDefaultMaxProgramOutput, std::span<const int> inherited = {},
                          const std::atomic<bool>* cancel = nullptr);

}  // namespace volgate
