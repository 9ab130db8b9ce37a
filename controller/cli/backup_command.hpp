#pragma once
// `volgate backup create|list|show|restore|delete`: the controller's backups (Cinder's backup
// API) from the command line; create and restore wait with a progress bar for long copies.
#include <CLI/CLI.hpp>
#include <string>

#include "controller/cli/volume_command.hpp"

namespace volgate::controller {

// Adds the `backup` group to `app`.
CLI::App* add_backup_commands(CLI::App& app, ClientCommandOptions& options);
// Runs the backup subcommand `name`; throws CommandError (see command_client.hpp).
int backup_command(const std::string& name, const ClientCommandOptions& options);

}  // namespace volgate::controller
