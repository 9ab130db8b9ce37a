#pragma once
// The command-line client of the controller:
//   volgate volume create|list|show|extend|delete, volgate snapshot create|list|show|delete,
//   volgate backup create|list|show|restore|delete (backup_command.hpp),
//   volgate pool list, volgate quota show|set,
//   volgate attachment create|update|show|list|complete|delete (attachment_command.hpp),
//   volgate server list|show|attach|detach|volumes|actions (server_command.hpp).
// Each talks to the REST API found through --url or VOLGATE_URL (unix:PATH, http://HOST:PORT
// or https://HOST:PORT, checked against --cacert or VOLGATE_CACERT), prints a table (or --output json), and exits 2 with one line on stderr
// when anything fails.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace volgate::controller {

struct ClientCommandOptions {
  std::string url;
  std::string token_file;
  std::string cacert;  // https://: the CA file the controller's certificate must chain to
  std::string project = "default";
  std::string output = "table";
  bool wait = true;
  bool progress = false;  // draw the progress bar even when stderr is not a terminal

  std::string name;
  std::string id;
  std::string size;
  std::string volume_type;
  std::string availability_zone;
  std::string snapshot_id;
  std::string source_volid;
  std::string image;
  std::string description;
  bool encrypted = false;
  bool force = false;
  bool incremental = false;  // backup create
  std::string state;          // reset-state: the status to set
  std::string attach_status;  // volume reset-state: "detached" deletes the attachments
  std::string instance;   // attachment create: the instance it is for
  std::string mode = "rw";
  std::string connector;  // JSON
  std::string host;       // a connector of just {"host": HOST}
  std::string volume;     // server attach|detach: the volume (the server is `id`); backup create|restore
  std::string device;     // server attach: /dev/sdX or /dev/vdX
  std::string bus;        // server attach: scsi or virtio
  std::string tag;
  bool delete_on_termination = false;
  std::string request_id;  // server actions: one action
  std::optional<int64_t> quota_volumes;
  std::optional<int64_t> quota_snapshots;
  std::optional<int64_t> quota_gigabytes;
  double wait_timeout = 120;  // server start|stop: seconds to wait for the new state
};

struct ClientCommands {
  CLI::App* volume = nullptr;
  CLI::App* snapshot = nullptr;
  CLI::App* pool = nullptr;
  CLI::App* quota = nullptr;
  CLI::App* attachment = nullptr;
  CLI::App* server = nullptr;
  CLI::App* backup = nullptr;
};

ClientCommands add_client_commands(CLI::App& app, ClientCommandOptions& options);
// Runs whichever client command was parsed (nullopt: none was); returns the exit code.
std::optional<int> run_client_commands(const ClientCommands& commands, const ClientCommandOptions& options);

}  // namespace volgate::controller
