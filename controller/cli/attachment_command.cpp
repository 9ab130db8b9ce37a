#include "controller/cli/attachment_command.hpp"

#include <unistd.h>

#include <cstdio>

#include "controller/cli/command_client.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// The microversion with every attachment call (os-complete came with 3.44).
constexpr const char* kAttachmentApiVersion = "3.44";

// --connector JSON, or --host NAME for the least a connector says; nullopt with neither.
std::optional<json> connector(const ClientCommandOptions& o) {
  if (!o.connector.empty() && !o.host.empty()) throw CommandError("give --connector or --host, not both");
  if (!o.host.empty()) return json{{"host", o.host}};
  if (o.connector.empty()) return std::nullopt;
  json c = json::parse(o.connector, nullptr, false);
  if (c.is_discarded() || !c.is_object()) throw CommandError("--connector must be a JSON object, e.g. '{\"host\": \"hv1\"}'");
  return c;
}

void show_attachment(const ClientCommandOptions& o, const json& a) {
  if (o.output == "json") {
    std::printf("%s\n", json{{"attachment", a}}.dump(2).c_str());
    return;
  }
  std::vector<std::pair<std::string, std::string>> f = {
      {"id", text(a, "id")},
      {"status", text(a, "status")},
      {"volume_id", text(a, "volume_id")},
      {"instance", text(a, "instance")},
      {"attach_mode", text(a, "attach_mode")},
      {"attached_at", text(a, "attached_at")},
  };
  if (a.contains("connection_info") && a["connection_info"].is_object()) {
    const json& info = a["connection_info"];
    f.emplace_back("driver_volume_type", text(info, "driver_volume_type"));
    const json& data = info.value("data", json::object());
    f.emplace_back("socket", text(data, "socket"));
    f.emplace_back("export", text(data, "export"));
    f.emplace_back("encrypted", text(data, "encrypted"));
    if (data.contains("socket") && data.contains("export"))
      f.emplace_back("uri", "nbd+unix:///" + data["export"].get<std::string>() + "?socket=" +
                                data["socket"].get<std::string>());
  }
  print_fields(f);
}

}  // namespace

int attachment_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o, kAttachmentApiVersion);
  if (name == "create") {
    json a = {{"volume_uuid", o.id}};
    if (!o.instance.empty()) a["instance_uuid"] = o.instance;
    if (o.mode != "rw") a["mode"] = o.mode;
    if (auto c = connector(o)) a["connector"] = *c;
    show_attachment(o, client.call("POST", "/attachments", json{{"attachment", a}})["attachment"]);
    return 0;
  }
  if (name == "update") {
    auto c = connector(o);
    if (!c) throw CommandError("give the host's --connector JSON or --host NAME");
    show_attachment(o, client.call("PUT", "/attachments/" + o.id, json{{"attachment", {{"connector", *c}}}})["attachment"]);
    return 0;
  }
  if (name == "show") {
    show_attachment(o, client.call("GET", "/attachments/" + o.id)["attachment"]);
    return 0;
  }
  if (name == "complete") {
    client.call("POST", "/attachments/" + o.id + "/action", json{{"os-complete", nullptr}});
    show_attachment(o, client.call("GET", "/attachments/" + o.id)["attachment"]);
    return 0;
  }
  if (name == "delete") {
    json left = client.call("DELETE", "/attachments/" + o.id);
    if (o.output == "json")
      std::printf("%s\n", left.dump(2).c_str());
    else
      std::printf("deleted attachment %s\n", o.id.c_str());
    return 0;
  }
  if (name == "list") {
    std::string path = "/attachments/detail";
    if (!o.id.empty()) path += "?volume_id=" + o.id;
    json list = client.call("GET", path)["attachments"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"attachments", list}}.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : list)
      rows.push_back({text(a, "id"), text(a, "volume_id"), text(a, "status"), text(a, "instance"),
                      text(a, "attach_mode")});
    print_table({"ID", "VOLUME", "STATUS", "INSTANCE", "MODE"}, rows);
    return 0;
  }
  return 2;
}

}  // namespace volgate::controller
