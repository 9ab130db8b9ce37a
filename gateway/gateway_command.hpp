#pragma once
// `volgate gateway restart`: replaces a running gateway with a new process (a new binary after
// an upgrade, new TLS certificates, a changed --threads) through a live hand-over, without its
// clients noticing more than a pause. The front for `volgate serve --take-over`.
#include <CLI/CLI.hpp>
#include <string>

namespace volgate::gateway {

struct GatewayCommandOptions {
  std::string control_path;
  std::string binary;    // default: this very program
  std::string log_file;  // the new gateway's stdout and stderr; default: this command's
  unsigned timeout_s = 180;
  unsigned threads = 0;  // passed on as --threads when given
};

// Declares `gateway restart` on `app`; returns the `gateway` subcommand.
CLI::App* add_gateway_command(CLI::App& app, GatewayCommandOptions& options);
// The exit code: 0 once the new process serves, 1 when the hand-over failed (the running
// gateway then serves on), 2 for unusable arguments.
int run_gateway_command(const GatewayCommandOptions& options);

}  // namespace volgate::gateway
