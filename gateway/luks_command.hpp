#pragma once
// `volgate luks format|dump|add-key|remove-key`: LUKS header work on any backend.
#include <CLI/CLI.hpp>
#include <string>

#include "crypto/luks_container.hpp"

namespace volgate::gateway {

struct LuksOptions {
  std::string target;  // BACKEND[,OPTION...]
  std::string key_file;
  std::string new_key_file;
  bool force = false;
  crypto::LuksFormatOptions format;
};

// Declares `luks` and its subcommands on `app`; returns the `luks` command.
CLI::App* add_luks_command(CLI::App& app, LuksOptions& options);
// Runs whichever luks subcommand was parsed; returns the exit code (2 on any error).
int run_luks(const CLI::App& luks, const LuksOptions& options);

}  // namespace volgate::gateway
