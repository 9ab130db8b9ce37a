#pragma once
// `volgate doctor`: checks this host's prerequisites for the controller and the gateway, and
// says what is wrong and how to fix it. Exit code 0 when nothing required is missing, 1 when
// something is, 2 for bad arguments.
#include <CLI/CLI.hpp>
#include <string>

namespace volgate::controller {

struct DoctorOptions {
  std::string config_file;
  std::string state_dir;
  std::string libvirt_uri;  // overrides the config's; "none": none
  bool fuse = false;        // /dev/fuse is required (volgate serve --fuse)
  uint64_t pbkdf_memory_kib = 0;  // 0: cryptsetup's default for LUKS2 (1 GiB)
  double timeout_seconds = 5;
};

CLI::App* add_doctor_command(CLI::App& app, DoctorOptions& options);
int run_doctor(const DoctorOptions& options);

}  // namespace volgate::controller
