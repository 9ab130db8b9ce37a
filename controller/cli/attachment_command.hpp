#pragma once
// `volgate attachment create|update|show|list|complete|delete`: Cinder's attachment API from the
// command line (microversion 3.44), for a host that attaches volumes without Nova.
#include <string>

#include "controller/cli/volume_command.hpp"

namespace volgate::controller {

// Runs the attachment subcommand `name`; throws CommandError (see command_client.hpp).
int attachment_command(const std::string& name, const ClientCommandOptions& options);

}  // namespace volgate::controller
