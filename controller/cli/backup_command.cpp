#include "controller/cli/backup_command.hpp"

#include <cstdio>

#include "controller/cli/command_client.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

std::string bytes_text(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_unsigned()) return "-";
  const double mib = static_cast<double>(j[key].get<uint64_t>()) / (1 << 20);
  char out[32];
  std::snprintf(out, sizeof out, "%.1f MiB", mib);
  return out;
}

void show_backup(const ClientCommandOptions& o, const json& b) {
  if (o.output == "json") {
    std::printf("%s\n", json{{"backup", b}}.dump(2).c_str());
    return;
  }
  std::vector<std::pair<std::string, std::string>> f = {
      {"id", text(b, "id")},
      {"name", text(b, "name")},
      {"status", text(b, "status")},
      {"volume_id", text(b, "volume_id")},
      {"size", text(b, "size") + " GiB"},
      {"incremental", text(b, "is_incremental")},
      {"chunks", text(b, "object_count")},
      {"stored", bytes_text(b, "volgate:stored_bytes")},
      {"data_timestamp", text(b, "data_timestamp")},
  };
  if (b.contains("volgate:parent_id")) f.emplace_back("parent", text(b, "volgate:parent_id"));
  if (b.contains("volgate:progress")) f.emplace_back("progress", text(b, "volgate:progress") + "%");
  if (!b["fail_reason"].is_null()) f.emplace_back("error", text(b, "fail_reason"));
  print_fields(f);
}

std::string failure(const json& b) {
  return "backup " + text(b, "id") + " is " + text(b, "status") +
         (b["fail_reason"].is_null() ? "" : ": " + text(b, "fail_reason"));
}

}  // namespace

CLI::App* add_backup_commands(CLI::App& app, ClientCommandOptions& o) {
  auto* group = app.add_subcommand("backup", "Backups of volumes, kept in the controller's backup repository");
  group->require_subcommand(1);
  auto sub = [group](const char* name, const char* help) {
    auto* cmd = group->add_subcommand(name, help);
    cmd->fallthrough();
    return cmd;
  };
  auto* create = sub("create", "Back a volume up (the whole volume, or what changed since its newest backup)");
  create->add_option("--volume", o.volume, "The volume")->required()->type_name("ID");
  create->add_flag("--incremental", o.incremental, "Store only what changed since the volume's newest backup");
  create->add_flag("--force", o.force, "Also back up an in-use volume (through a temporary snapshot)");
  create->add_option("--description", o.description, "Free text");
  create->add_flag("!--no-wait", o.wait, "Return once accepted instead of waiting until it is available");
  create->add_flag("--progress", o.progress, "Draw the progress bar even when stderr is not a terminal");
  create->add_option("NAME", o.name, "Backup name");
  sub("list", "List the project's backups");
  sub("show", "Show one backup")->add_option("ID", o.id, "Backup id")->required();
  auto* restore = sub("restore", "Restore a backup into a new volume, or over an available volume at least as large");
  restore->add_option("--volume", o.volume, "Overwrite this volume (default: a new one)")->type_name("ID");
  restore->add_option("--name", o.name, "Name of the new volume");
  restore->add_flag("!--no-wait", o.wait, "Return once accepted instead of waiting until it is restored");
  restore->add_flag("--progress", o.progress, "Draw the progress bar even when stderr is not a terminal");
  restore->add_option("ID", o.id, "Backup id")->required();
  auto* del = sub("delete", "Delete a backup (its incremental backups first)");
  del->add_flag("!--no-wait", o.wait, "Return once accepted");
  del->add_option("ID", o.id, "Backup id")->required();
  return group;
}

int backup_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o, "3.53");
  if (name == "create") {
    json b = {{"volume_id", o.volume}, {"name", o.name}, {"incremental", o.incremental}, {"force", o.force}};
    if (!o.description.empty()) b["description"] = o.description;
    const std::string id = client.call("POST", "/backups", json{{"backup", b}})["backup"]["id"];
    json shown = client.call("GET", "/backups/" + id)["backup"];
    if (o.wait) {
      auto done = wait_while(client, o, "/backups/" + id, "backup", "creating", true);
      if (!done) throw CommandError("backup " + id + " disappeared while being created");
      shown = *done;
      if (shown["status"] != "available") throw CommandError(failure(shown));
    }
    show_backup(o, shown);
    return 0;
  }
  if (name == "list") {
    json list = client.call("GET", "/backups/detail")["backups"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"backups", list}}.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& b : list)
      rows.push_back({text(b, "id"), text(b, "name"), text(b, "status"), text(b, "size"), text(b, "volume_id"),
                      b["is_incremental"] == true ? "incremental" : "full", bytes_text(b, "volgate:stored_bytes")});
    print_table({"ID", "NAME", "STATUS", "SIZE(GiB)", "VOLUME", "KIND", "STORED"}, rows);
    return 0;
  }
  if (name == "show") {
    show_backup(o, client.call("GET", "/backups/" + o.id)["backup"]);
    return 0;
  }
  if (name == "restore") {
    json r = json::object();
    if (!o.volume.empty()) r["volume_id"] = o.volume;
    if (!o.name.empty()) r["name"] = o.name;
    json answer = client.call("POST", "/backups/" + o.id + "/restore", json{{"restore", r}})["restore"];
    const std::string target = answer["volume_id"];
    if (o.wait) {
      auto done = wait_while(client, o, "/backups/" + o.id, "backup", "restoring", true);
      int status = 0;
      json v = client.call("GET", "/volumes/" + target, std::nullopt, &status);
      if (status == 404 || v["volume"]["status"] != "available")
        throw CommandError("restore of backup " + o.id + " into volume " + target + " failed" +
                           (done && !(*done)["fail_reason"].is_null() ? ": " + text(*done, "fail_reason") : ""));
    }
    if (o.output == "json") {
      std::printf("%s\n", json{{"restore", answer}}.dump(2).c_str());
    } else {
      print_fields({{"backup_id", o.id}, {"volume_id", target}, {"volume_name", text(answer, "volume_name")}});
    }
    return 0;
  }
  if (name == "delete") {
    client.call("DELETE", "/backups/" + o.id);
    if (o.wait) {
      auto left = wait_while(client, o, "/backups/" + o.id, "backup", "deleting");
      if (left) throw CommandError(failure(*left));
    }
    if (o.output == "json") std::printf("{}\n");
    else std::printf("deleted backup %s\n", o.id.c_str());
    return 0;
  }
  return 2;
}

}  // namespace volgate::controller
