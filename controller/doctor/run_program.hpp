#pragma once
// Runs a program to see what it says (qemu -device help, tgtadm), bounded in time: a hung
// program is killed, so the doctor never hangs on what it examines.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace volgate::controller::doctor {

struct ProgramResult {
  int exit_code = -1;       // -1: killed (timeout) or ended by a signal
  bool timed_out = false;
  std::string output;       // standard output and error together (at most 1 MiB kept)
};

// argv[0] is looked up in PATH. `environment`: NAME=VALUE entries added to (or replacing those
// of) this process's. Throws std::system_error when the program cannot be started.
ProgramResult run_program(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& environment = {});

}  // namespace volgate::controller::doctor
