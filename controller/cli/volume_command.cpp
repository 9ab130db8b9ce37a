#include "controller/cli/volume_command.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common/size.hpp"
#include "controller/api/api_client.hpp"
#include "controller/cli/attachment_command.hpp"
#include "controller/cli/backup_command.hpp"
#include "controller/cli/command_client.hpp"
#include "controller/cli/server_command.hpp"
#include "crypto/secure_bytes.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

constexpr uint64_t kGiBytes = uint64_t{1} << 30;

// "10G", "10GiB" or a bare "10" (GiB, as Cinder counts): a whole number of GiB.
uint64_t parse_gib(const std::string& text) {
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 10) {
    uint64_t n = std::stoull(text);
    if (n == 0) throw CommandError("--size must be at least 1 GiB");
    return n;
  }
  auto bytes = parse_size(text);
  if (!bytes || *bytes == 0) throw CommandError("--size '" + text + "' is not a size (e.g. 10G)");
  if (*bytes % kGiBytes) throw CommandError("--size '" + text + "': volumes are whole GiB (e.g. 1G, 20G)");
  return *bytes / kGiBytes;
}

void show_volume(const ClientCommandOptions& o, const json& v) {
  if (o.output == "json") {
    std::printf("%s\n", json{{"volume", v}}.dump(2).c_str());
    return;
  }
  std::vector<std::pair<std::string, std::string>> f = {
      {"id", text(v, "id")},
      {"name", text(v, "name")},
      {"status", text(v, "status")},
      {"size", text(v, "size") + " GiB"},
      {"volume_type", text(v, "volume_type")},
      {"encrypted", text(v, "encrypted")},
      {"availability_zone", text(v, "availability_zone")},
      {"host", text(v, "os-vol-host-attr:host")},
      {"snapshot_id", text(v, "snapshot_id")},
      {"source_volid", text(v, "source_volid")},
      {"created_at", text(v, "created_at")},
  };
  if (v.contains("volgate:image")) f.emplace_back("image", text(v, "volgate:image"));
  if (v.contains("volgate:export_target")) f.emplace_back("export_target", text(v, "volgate:export_target"));
  if (v.contains("volgate:progress")) f.emplace_back("progress", text(v, "volgate:progress") + "%");
  if (v.contains("volgate:error")) f.emplace_back("error", text(v, "volgate:error"));
  print_fields(f);
}

void show_snapshot(const ClientCommandOptions& o, const json& s) {
  if (o.output == "json") {
    std::printf("%s\n", json{{"snapshot", s}}.dump(2).c_str());
    return;
  }
  std::vector<std::pair<std::string, std::string>> f = {
      {"id", text(s, "id")},         {"name", text(s, "name")},         {"status", text(s, "status")},
      {"size", text(s, "size") + " GiB"}, {"volume_id", text(s, "volume_id")}, {"created_at", text(s, "created_at")},
  };
  if (s.contains("volgate:error")) f.emplace_back("error", text(s, "volgate:error"));
  print_fields(f);
}

std::string failure(const json& item, const std::string& what) {
  return what + " " + text(item, "id") + " is " + text(item, "status") +
         (item.contains("volgate:error") ? ": " + text(item, "volgate:error") : "");
}

int volume_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o);
  if (name == "create") {
    json v = {{"name", o.name}};
    if (!o.size.empty()) v["size"] = parse_gib(o.size);  // else the controller takes the source's
    if (!o.description.empty()) v["description"] = o.description;
    if (!o.volume_type.empty()) v["volume_type"] = o.volume_type;
    if (!o.availability_zone.empty()) v["availability_zone"] = o.availability_zone;
    if (!o.snapshot_id.empty()) v["snapshot_id"] = o.snapshot_id;
    if (!o.source_volid.empty()) v["source_volid"] = o.source_volid;
    if (!o.image.empty()) {
      // A file here is named by its absolute path (the controller checks that it is in one of
      // its image directories); anything else is a name within those directories.
      std::error_code ec;
      auto absolute = std::filesystem::absolute(o.image, ec);
      v["imageRef"] = !ec && std::filesystem::exists(absolute, ec) ? absolute.string() : o.image;
    }
    if (o.encrypted) v["encrypted"] = true;
    json created = client.call("POST", "/volumes", json{{"volume", v}})["volume"];
    if (o.wait) {
      const bool copy = !o.image.empty() || !o.snapshot_id.empty() || !o.source_volid.empty();
      auto done = wait_while(client, o, "/volumes/" + created["id"].get<std::string>(), "volume", "creating", copy);
      if (!done) throw CommandError("volume " + text(created, "id") + " disappeared while being created");
      created = *done;
      if (created["status"] != "available") {
        show_volume(o, created);
        throw CommandError(failure(created, "volume"));
      }
    }
    show_volume(o, created);
    return 0;
  }
  if (name == "list") {
    json list = client.call("GET", "/volumes/detail")["volumes"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"volumes", list}}.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& v : list) {
      std::string status = text(v, "status");
      if (v.contains("volgate:progress")) status += " " + text(v, "volgate:progress") + "%";
      rows.push_back({text(v, "id"), text(v, "name"), status, text(v, "size"), text(v, "volume_type"),
                      v.value("encrypted", false) ? "yes" : "no", text(v, "os-vol-host-attr:host")});
    }
    print_table({"ID", "NAME", "STATUS", "SIZE(GiB)", "TYPE", "ENCRYPTED", "HOST"}, rows);
    return 0;
  }
  if (name == "show") {
    show_volume(o, client.call("GET", "/volumes/" + o.id)["volume"]);
    return 0;
  }
  if (name == "extend") {
    uint64_t size = parse_gib(o.size);
    client.call("POST", "/volumes/" + o.id + "/action", json{{"os-extend", {{"new_size", size}}}});
    json v = client.call("GET", "/volumes/" + o.id)["volume"];
    if (o.wait) {
      auto done = wait_while(client, o, "/volumes/" + o.id, "volume", "extending");
      if (!done) throw CommandError("volume " + o.id + " disappeared while being extended");
      v = *done;
      if (v["size"].get<uint64_t>() != size) throw CommandError(failure(v, "volume") + " (not extended)");
    }
    show_volume(o, v);
    return 0;
  }
  if (name == "reset-state") {
    json r = json::object();
    if (!o.state.empty()) r["status"] = o.state;
    if (!o.attach_status.empty()) r["attach_status"] = o.attach_status;
    if (r.empty()) throw CommandError("give --state, --attach-status or both");
    client.call("POST", "/volumes/" + o.id + "/action", json{{"os-reset_status", r}});
    show_volume(o, client.call("GET", "/volumes/" + o.id)["volume"]);
    return 0;
  }
  if (name == "delete") {
    client.call("DELETE", "/volumes/" + o.id + (o.force ? "?force=true" : ""));
    if (o.wait) {
      auto left = wait_while(client, o, "/volumes/" + o.id, "volume", "deleting");
      if (left) throw CommandError(failure(*left, "volume"));
    }
    if (o.output == "json") std::printf("{}\n");
    else std::printf("deleted volume %s\n", o.id.c_str());
    return 0;
  }
  return 2;
}

int snapshot_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o);
  if (name == "create") {
    json s = {{"volume_id", o.id}, {"name", o.name}, {"force", o.force}};
    if (!o.description.empty()) s["description"] = o.description;
    json created = client.call("POST", "/snapshots", json{{"snapshot", s}})["snapshot"];
    if (o.wait) {
      auto done = wait_while(client, o, "/snapshots/" + created["id"].get<std::string>(), "snapshot", "creating");
      if (!done) throw CommandError("snapshot " + text(created, "id") + " disappeared while being created");
      created = *done;
      if (created["status"] != "available") throw CommandError(failure(created, "snapshot"));
    }
    show_snapshot(o, created);
    return 0;
  }
  if (name == "list") {
    json list = client.call("GET", "/snapshots/detail")["snapshots"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"snapshots", list}}.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : list)
      rows.push_back({text(s, "id"), text(s, "name"), text(s, "status"), text(s, "size"), text(s, "volume_id")});
    print_table({"ID", "NAME", "STATUS", "SIZE(GiB)", "VOLUME"}, rows);
    return 0;
  }
  if (name == "show") {
    show_snapshot(o, client.call("GET", "/snapshots/" + o.id)["snapshot"]);
    return 0;
  }
  if (name == "reset-state") {
    client.call("POST", "/snapshots/" + o.id + "/action", json{{"os-reset_status", {{"status", o.state}}}});
    show_snapshot(o, client.call("GET", "/snapshots/" + o.id)["snapshot"]);
    return 0;
  }
  if (name == "delete") {
    if (o.force) client.call("POST", "/snapshots/" + o.id + "/action", json{{"os-force_delete", json::object()}});
    else client.call("DELETE", "/snapshots/" + o.id);
    if (o.wait) {
      auto left = wait_while(client, o, "/snapshots/" + o.id, "snapshot", "deleting");
      if (left) throw CommandError(failure(*left, "snapshot"));
    }
    if (o.output == "json") std::printf("{}\n");
    else std::printf("deleted snapshot %s\n", o.id.c_str());
    return 0;
  }
  return 2;
}

std::string gb(const json& caps, const char* key) {
  if (!caps.contains(key) || !caps[key].is_number()) return "-";
  char out[32];
  std::snprintf(out, sizeof out, "%.1f", caps[key].get<double>());
  return out;
}

int pool_command(const ClientCommandOptions& o) {
  Client client(o);
  json list = client.call("GET", "/scheduler-stats/get_pools?detail=true")["pools"];
  if (o.output == "json") {
    std::printf("%s\n", json{{"pools", list}}.dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : list) {
    const json& c = p["capabilities"];
    rows.push_back({text(c, "pool_name"), text(c, "storage_protocol"), text(c, "availability_zone"),
                    gb(c, "total_capacity_gb"), gb(c, "free_capacity_gb"), gb(c, "allocated_capacity_gb"),
                    text(c, "thin_provisioning_support"), text(c, "snapshot_support"), text(c, "encryption_support"),
                    text(c, "multipath")});
  }
  print_table({"POOL", "DRIVER", "ZONE", "TOTAL(GiB)", "FREE(GiB)", "ALLOCATED(GiB)", "THIN", "SNAPSHOTS",
               "ENCRYPTION", "MULTIPATH"},
              rows);
  return 0;
}

int quota_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o);
  const std::string path = "/os-quota-sets/" + o.project;
  if (name == "set") {
    json q = json::object();
    if (o.quota_volumes) q["volumes"] = *o.quota_volumes;
    if (o.quota_snapshots) q["snapshots"] = *o.quota_snapshots;
    if (o.quota_gigabytes) q["gigabytes"] = *o.quota_gigabytes;
    if (q.empty()) throw CommandError("give at least one of --volumes, --snapshots, --gigabytes");
    client.call("PUT", path, json{{"quota_set", q}});
  }
  json set = client.call("GET", path + "?usage=true")["quota_set"];
  if (o.output == "json") {
    std::printf("%s\n", json{{"quota_set", set}}.dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const char* r : {"volumes", "snapshots", "gigabytes"})
    if (set.contains(r))
      rows.push_back({r, set[r]["limit"].dump(), set[r]["in_use"].dump(), set[r]["reserved"].dump()});
  print_table({"RESOURCE", "LIMIT", "IN USE", "RESERVED"}, rows);
  return 0;
}

void add_common(CLI::App* cmd, ClientCommandOptions& o) {
  // The environment variables are read after parsing (with_environment): CLI11 2.1 lets them
  // override an option a subcommand passed up to its group.
  cmd->add_option("--url", o.url, "Controller API: unix:PATH, http://HOST:PORT or https://HOST:PORT\n"
                  "(env VOLGATE_URL)")
      ->type_name("URL");
  cmd->add_option("--cacert", o.cacert,
                  "https://: PEM file of the CA(s) the controller's certificate must chain to; its\n"
                  "name must match HOST (env VOLGATE_CACERT; default: the system's CAs)")
      ->type_name("FILE");
  cmd->add_option("--token-file", o.token_file,
                  "File holding the API token (env VOLGATE_TOKEN_FILE; default with\n"
                  "unix:DIR/controller.sock: DIR/token)")
      ->type_name("PATH");
  cmd->add_option("--project", o.project, "Project (tenant) the request is for (env VOLGATE_PROJECT)")
      ->capture_default_str();
  cmd->add_option("--output", o.output, "table or json")->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
}

// Subcommands pass the options they do not know to their group, so `volume create --url X` works.
CLI::App* sub(CLI::App* group, const char* name, const char* help) {
  auto* cmd = group->add_subcommand(name, help);
  cmd->fallthrough();
  return cmd;
}

}  // namespace

ClientCommands add_client_commands(CLI::App& app, ClientCommandOptions& o) {
  ClientCommands c;
  c.volume = app.add_subcommand("volume", "Volumes of the controller (through its REST API)");
  c.volume->require_subcommand(1);
  add_common(c.volume, o);
  auto* create = sub(c.volume, "create", "Create a volume: blank, or from a snapshot, a volume or an image file");
  create->add_option("--size", o.size, "Size in GiB: 10, 10G (default with a source: the source's)")
      ->type_name("SIZE");
  create->add_option("--type", o.volume_type, "Volume type (see the controller's config)");
  create->add_option("--availability-zone", o.availability_zone, "Availability zone");
  auto* snap = create->add_option("--snapshot", o.snapshot_id, "Start from this snapshot")->type_name("ID");
  auto* vol = create->add_option("--source-volume", o.source_volid, "Start as a copy of this volume")->type_name("ID");
  auto* img = create->add_option("--image", o.image, "Start from this image file (raw, or qcow2: converted by\n"
                                 "qemu-img), which must be in one of the controller's image_dirs\n"
                                 "(default STATE_DIR/images): a path there or a name relative to them")
                  ->type_name("FILE");
  snap->excludes(vol)->excludes(img);
  vol->excludes(img);
  create->add_flag("--encrypted", o.encrypted, "LUKS2-encrypt it with a passphrase the controller keeps wrapped");
  create->add_option("--description", o.description, "Free text");
  create->add_flag("!--no-wait", o.wait, "Return once accepted instead of waiting until it is available");
  create->add_flag("--progress", o.progress, "Draw the copy progress bar even when stderr is not a terminal");
  create->add_option("NAME", o.name, "Volume name")->required();
  sub(c.volume, "list", "List the project's volumes");
  sub(c.volume, "show", "Show one volume")->add_option("ID", o.id, "Volume id")->required();
  auto* extend = sub(c.volume, "extend", "Grow a volume");
  extend->add_option("--size", o.size, "New size in GiB (10, 10G)")->required()->type_name("SIZE");
  extend->add_flag("!--no-wait", o.wait, "Return once accepted");
  extend->add_option("ID", o.id, "Volume id")->required();
  auto* del = sub(c.volume, "delete", "Delete a volume (it must have no snapshots)");
  del->add_flag("--force", o.force, "Admin: delete it whatever its status says (not while attached\n"
                "or while an operation works on it)");
  del->add_flag("!--no-wait", o.wait, "Return once accepted");
  del->add_option("ID", o.id, "Volume id")->required();
  auto* reset = sub(c.volume, "reset-state", "Admin: set the status a volume's record shows, after something\n"
                    "outside volgate went wrong (nothing on the pool changes)");
  reset->add_option("--state", o.state, "The status to set (available, error, in-use, ...)");
  reset->add_option("--attach-status", o.attach_status, "detached: delete its attachments and their exports too")
      ->check(CLI::IsMember({"detached"}));
  reset->add_option("ID", o.id, "Volume id")->required();

  c.snapshot = app.add_subcommand("snapshot", "Snapshots of volumes (through the controller's REST API)");
  c.snapshot->require_subcommand(1);
  add_common(c.snapshot, o);
  auto* screate = sub(c.snapshot, "create", "Snapshot a volume");
  screate->add_option("--volume", o.id, "The volume")->required()->type_name("ID");
  screate->add_option("--description", o.description, "Free text");
  screate->add_flag("--force", o.force, "Also snapshot a volume that is in-use");
  screate->add_flag("!--no-wait", o.wait, "Return once accepted");
  screate->add_option("NAME", o.name, "Snapshot name")->required();
  sub(c.snapshot, "list", "List the project's snapshots");
  sub(c.snapshot, "show", "Show one snapshot")->add_option("ID", o.id, "Snapshot id")->required();
  auto* sdel = sub(c.snapshot, "delete", "Delete a snapshot");
  sdel->add_flag("--force", o.force, "Admin: delete it whatever its status says");
  sdel->add_flag("!--no-wait", o.wait, "Return once accepted");
  sdel->add_option("ID", o.id, "Snapshot id")->required();
  auto* sreset = sub(c.snapshot, "reset-state", "Admin: set the status a snapshot's record shows");
  sreset->add_option("--state", o.state, "The status to set (available, error, ...)")->required();
  sreset->add_option("ID", o.id, "Snapshot id")->required();

  c.backup = add_backup_commands(app, o);
  add_common(c.backup, o);

  c.pool = app.add_subcommand("pool", "The controller's pools");
  c.pool->require_subcommand(1);
  add_common(c.pool, o);
  sub(c.pool, "list", "Pools with their capacity and capabilities");

  c.quota = app.add_subcommand("quota", "Per-project quotas");
  c.quota->require_subcommand(1);
  add_common(c.quota, o);
  sub(c.quota, "show", "Limits and usage of the project");
  auto* qset = sub(c.quota, "set", "Change the project's limits (-1: unlimited)");
  qset->add_option("--volumes", o.quota_volumes, "Most volumes")->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
  qset->add_option("--snapshots", o.quota_snapshots, "Most snapshots")->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
  qset->add_option("--gigabytes", o.quota_gigabytes, "Most GiB of volumes and snapshots together")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));

  c.attachment = app.add_subcommand("attachment", "Volume attachments (Cinder's attachment API): what a host uses to reach a volume");
  c.attachment->require_subcommand(1);
  add_common(c.attachment, o);
  auto connector_options = [&o](CLI::App* cmd) {
    cmd->add_option("--connector", o.connector, "The host's connector, a JSON object (e.g. '{\"host\": \"hv1\"}')")
        ->type_name("JSON");
    cmd->add_option("--host", o.host, "Shorthand for --connector '{\"host\": NAME}'")->type_name("NAME");
  };
  auto* acreate = sub(c.attachment, "create", "Reserve a volume for an instance; with a connector, also make it reachable");
  acreate->add_option("--instance", o.instance, "The instance (server) it is for")->type_name("UUID");
  acreate->add_option("--mode", o.mode, "rw or ro")->check(CLI::IsMember({"rw", "ro"}))->capture_default_str();
  connector_options(acreate);
  acreate->add_option("VOLUME", o.id, "Volume id")->required();
  auto* aupdate = sub(c.attachment, "update", "Send the host's connector: the gateway serves the volume (connection info)");
  connector_options(aupdate);
  aupdate->add_option("ID", o.id, "Attachment id")->required();
  sub(c.attachment, "show", "Show one attachment with its connection info")->add_option("ID", o.id, "Attachment id")->required();
  sub(c.attachment, "list", "The project's attachments")->add_option("--volume", o.id, "Only this volume's")->type_name("ID");
  sub(c.attachment, "complete", "Say the host has attached it (the volume becomes in-use)")
      ->add_option("ID", o.id, "Attachment id")->required();
  sub(c.attachment, "delete", "Let the volume go: the export is removed when no other attachment uses it")
      ->add_option("ID", o.id, "Attachment id")->required();

  c.server = app.add_subcommand("server", "Servers: the hypervisor's domains (libvirt) that volumes attach to");
  c.server->require_subcommand(1);
  add_common(c.server, o);
  sub(c.server, "list", "The domains on this host, with their state");
  auto server_arg = [&o](CLI::App* cmd) {
    cmd->add_option("SERVER", o.id, "Its UUID, or its name if no other has it")->required();
  };
  server_arg(sub(c.server, "show", "One server"));
  auto* attach = sub(c.server, "attach", "Attach a volume to a server as a disk (Nova's volume attach)");
  server_arg(attach);
  attach->add_option("VOLUME", o.volume, "Volume id")->required();
  attach->add_option("--device", o.device, "The device name in the guest (default: the next free one)")
      ->type_name("/dev/sdX|/dev/vdX");
  attach->add_option("--bus", o.bus, "The disk bus: scsi (virtio-scsi, the default) or virtio (virtio-blk)")
      ->check(CLI::IsMember({"scsi", "virtio"}));
  attach->add_option("--tag", o.tag, "A tag for the attachment, shown with it (up to 60 characters; recorded as Nova does, no config drive carries it to the guest)");
  attach->add_flag("--delete-on-termination", o.delete_on_termination,
                   "Delete the volume with the server (recorded, as Nova does)");
  auto* detach = sub(c.server, "detach", "Detach a volume from a server (the guest lets go of the disk first)");
  server_arg(detach);
  detach->add_option("VOLUME", o.volume, "Volume id")->required();
  server_arg(sub(c.server, "volumes", "The server's attached volumes (block device mappings)"));
  auto* actions = sub(c.server, "actions", "The server's action log: attach and detach requests and how they ended");
  server_arg(actions);
  actions->add_option("REQUEST_ID", o.request_id, "Show this action with its events");
  for (auto [verb, what] : {std::pair{"start", "Boot a shut-off server (its volumes' exports are checked first)"},
                            std::pair{"stop", "Shut a server down (powered off after the controller's shutdown timeout)"}}) {
    auto* power = sub(c.server, verb, what);
    server_arg(power);
    power->add_option("--timeout", o.wait_timeout, "Seconds to wait for the new state")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
  }
  return c;
}

namespace {
ClientCommandOptions with_environment(ClientCommandOptions o, const CLI::App& group) {
  auto env = [](const char* name) -> std::string {
    const char* value = std::getenv(name);
    return value ? value : "";
  };
  if (group.count("--url") == 0) o.url = env("VOLGATE_URL");
  if (group.count("--token-file") == 0) o.token_file = env("VOLGATE_TOKEN_FILE");
  if (group.count("--cacert") == 0) o.cacert = env("VOLGATE_CACERT");
  if (group.count("--project") == 0 && !env("VOLGATE_PROJECT").empty()) o.project = env("VOLGATE_PROJECT");
  return o;
}
}  // namespace

std::optional<int> run_client_commands(const ClientCommands& c, const ClientCommandOptions& parsed) {
  const CLI::App* group = nullptr;
  for (const CLI::App* g : {c.volume, c.snapshot, c.backup, c.pool, c.quota, c.attachment, c.server})
    if (g->parsed()) group = g;
  if (!group) return std::nullopt;
  const std::string name = group->get_subcommands().front()->get_name();
  const std::string label = "volgate " + group->get_name() + " " + name;
  const ClientCommandOptions o = with_environment(parsed, *group);
  try {
    if (group == c.volume) {
      if (name == "create" && o.size.empty() && o.snapshot_id.empty() && o.source_volid.empty() && o.image.empty())
        throw CommandError("--size is required for a blank volume");
      return volume_command(name, o);
    }
    if (group == c.snapshot) return snapshot_command(name, o);
    if (group == c.backup) return backup_command(name, o);
    if (group == c.pool) return pool_command(o);
    if (group == c.attachment) return attachment_command(name, o);
    if (group == c.server) return server_command(name, o);
    return quota_command(name, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", label.c_str(), e.what());
    return 2;
  }
}

}  // namespace volgate::controller
