#pragma once
// Starting a program that outlives its starter: a gateway the controller runs (`--gateway`), or
// the new gateway `volgate gateway restart` hands over to. Unlike run_program, nothing waits
// for it or reads what it says.
#include <sys/types.h>

#include <string>
#include <vector>

namespace volgate {

// argv[0] is the program's path (not looked up in PATH). The process gets a session of its own
// (a Ctrl-C meant for the starter does not reach it), an empty signal mask, /dev/null as
// standard input, and none of the starter's other descriptors (an inherited listening socket
// would outlive the starter). With `output_file`, its standard output and error are appended
// to that file (created 0600); without, it keeps the starter's. Throws std::system_error naming
// the program when it cannot be started.
pid_t start_detached(const std::vector<std::string>& argv, const std::string& output_file = {});

// "exited with status 1", "was killed by signal Killed": a waitpid() status, for a log line.
std::string describe_exit_status(int status);

// This program's path, resolved now (a package upgrade that replaces the file later starts the
// new one). Throws std::system_error when /proc/self/exe cannot be read.
std::string this_program_path();

}  // namespace volgate
