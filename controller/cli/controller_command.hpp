#pragma once
// `volgate controller`: runs the volume service and its REST API until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <string>

namespace volgate::controller {

struct ControllerOptions {
  std::string config_file;
  std::string state_dir;
  std::string tcp_listen;  // adds (or replaces) the config's TCP listener
  std::string tls_certificates;  // x509 directory for HTTPS on the TCP listener (or the config's)
  bool start_gateway = false;  // --gateway: start `volgate serve --control` when none answers
  std::string metrics;  // [HOST:]PORT of the Prometheus endpoint; empty: none
};

CLI::App* add_controller_command(CLI::App& app, ControllerOptions& options);
// Returns the exit code: 0 after a clean stop, 2 when it cannot start.
int run_controller(const ControllerOptions& options);

}  // namespace volgate::controller
