#pragma once
// `volgate server list|show|start|stop|attach|detach|volumes|actions`: the hypervisor's domains
// as the controller's servers API (Nova's shapes) shows them, Nova's os-start/os-stop (waiting
// for the new state), and volumes attached to them.
#include <string>

#include "controller/cli/volume_command.hpp"

namespace volgate::controller {

// Runs the server subcommand `name`; throws CommandError (see command_client.hpp).
int server_command(const std::string& name, const ClientCommandOptions& options);

}  // namespace volgate::controller
