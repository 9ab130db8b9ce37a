#include "controller/cli/server_command.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include "controller/api/api_version.hpp"
#include "controller/cli/command_client.hpp"

namespace volgate::controller {

using nlohmann::json;

namespace {

// --output json: the answer's document as the API gave it; the command's exit code.
int print_json(const char* root, const json& value) {
  std::printf("%s\n", json{{root, value}}.dump(2).c_str());
  return 0;
}

void print_attachment(const json& a) {
  print_fields({{"volume", text(a, "volumeId")},
                {"server", text(a, "serverId")},
                {"device", text(a, "device")},
                {"tag", text(a, "tag")},
                {"delete_on_termination", text(a, "delete_on_termination")},
                {"attachment_id", text(a, "attachment_id")},
                {"bdm_uuid", text(a, "bdm_uuid")}});
}

// How an action ended, from its events: the first failure's details, else Success, else running.
std::string outcome(const json& action) {
  if (!action.contains("events")) return text(action, "message") == "-" ? "" : text(action, "message");
  std::string result = "running";
  for (const auto& e : action["events"]) {
    if (e.value("result", json()).is_null()) return "running";
    if (e["result"] == "Error") return "Error: " + text(e, "details");
    result = text(e, "result");
  }
  return result;
}

}  // namespace

int server_command(const std::string& name, const ClientCommandOptions& o) {
  // Nova's shapes at the highest version the controller offers: tag and delete_on_termination
  // on attachments, failure details on action events.
  Client client(o, kMaxComputeVersion.text(), "compute");
  const std::string server = "/v2.1/servers/" + o.id;
  if (name == "list") {
    json list = client.call_path("GET", "/v2.1/servers/detail")["servers"];
    if (o.output == "json") return print_json("servers", list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : list) rows.push_back({text(s, "id"), text(s, "name"), text(s, "status")});
    print_table({"ID", "NAME", "STATUS"}, rows);
    return 0;
  }
  if (name == "show") {
    json s = client.call_path("GET", server)["server"];
    if (o.output == "json") return print_json("server", s);
    std::string volumes;
    for (const auto& v : s.value("os-extended-volumes:volumes_attached", json::array()))
      volumes += (volumes.empty() ? "" : ", ") + text(v, "id");
    print_fields({{"id", text(s, "id")},
                  {"name", text(s, "name")},
                  {"status", text(s, "status")},
                  {"vm_state", text(s, "OS-EXT-STS:vm_state")},
                  {"persistent", text(s, "volgate:persistent")},
                  {"availability_zone", text(s, "OS-EXT-AZ:availability_zone")},
                  {"volumes", volumes.empty() ? "-" : volumes}});
    return 0;
  }
  if (name == "attach") {
    json a = {{"volumeId", o.volume}};
    if (!o.device.empty()) a["device"] = o.device;
    if (!o.bus.empty()) a["volgate:bus"] = o.bus;
    if (!o.tag.empty()) a["tag"] = o.tag;
    if (o.delete_on_termination) a["delete_on_termination"] = true;
    json r = client.call_path("POST", server + "/os-volume_attachments", json{{"volumeAttachment", a}});
    if (o.output == "json") return print_json("volumeAttachment", r["volumeAttachment"]);
    print_attachment(r["volumeAttachment"]);
    return 0;
  }
  if (name == "detach") {
    client.call_path("DELETE", server + "/os-volume_attachments/" + o.volume);
    if (o.output != "json") std::printf("Volume %s detached from server %s.\n", o.volume.c_str(), o.id.c_str());
    return 0;
  }
  if (name == "volumes") {
    json list = client.call_path("GET", server + "/os-volume_attachments")["volumeAttachments"];
    if (o.output == "json") return print_json("volumeAttachments", list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : list)
      rows.push_back({text(a, "volumeId"), text(a, "device"), text(a, "tag"), text(a, "delete_on_termination"),
                      text(a, "attachment_id")});
    print_table({"VOLUME", "DEVICE", "TAG", "DELETE_ON_TERMINATION", "ATTACHMENT"}, rows);
    return 0;
  }
  if (name == "actions" && o.request_id.empty()) {
    json list = client.call_path("GET", server + "/os-instance-actions")["instanceActions"];
    if (o.output == "json") return print_json("instanceActions", list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : list) {
      // The list has no events: each action's own answer says how it ended.
      json full = client.call_path("GET", server + "/os-instance-actions/" + text(a, "request_id"))["instanceAction"];
      rows.push_back({text(a, "request_id"), text(a, "action"), text(a, "start_time"), outcome(full)});
    }
    print_table({"REQUEST_ID", "ACTION", "START", "RESULT"}, rows);
    return 0;
  }
  if (name == "actions") {
    json a = client.call_path("GET", server + "/os-instance-actions/" + o.request_id)["instanceAction"];
    if (o.output == "json") return print_json("instanceAction", a);
    print_fields({{"request_id", text(a, "request_id")},
                  {"action", text(a, "action")},
                  {"server", text(a, "instance_uuid")},
                  {"project", text(a, "project_id")},
                  {"start_time", text(a, "start_time")},
                  {"updated_at", text(a, "updated_at")},
                  {"message", text(a, "message")}});
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : a.value("events", json::array()))
      rows.push_back({text(e, "event"), text(e, "start_time"), text(e, "finish_time"), text(e, "result"),
                      text(e, "details")});
    std::printf("\n");
    print_table({"EVENT", "START", "FINISH", "RESULT", "DETAILS"}, rows);
    return 0;
  }
  if (name == "start" || name == "stop") {
    // Nova answers 202 and changes the state afterwards: wait for it, bounded.
    const std::string path = "/v2.1/servers/" + o.id;
    const std::string want = name == "start" ? "ACTIVE" : "SHUTOFF";
    client.call_path("POST", path + "/action", json{{"os-" + name, nullptr}});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.wait_timeout);
    for (;;) {
      int status = 0;
      json body = client.call_path("GET", path, std::nullopt, &status);
      if (status == 404 && name == "stop") {  // a transient domain is gone once stopped
        std::printf("%s: stopped and gone (it was transient)\n", o.id.c_str());
        return 0;
      }
      if (status != 200)
        throw CommandError("server " + o.id + " could not be read back (HTTP " + std::to_string(status) + ")");
      const json& s = body["server"];
      if (text(s, "status") == want) {
        if (o.output == "json") {
          std::printf("%s\n", json{{"server", s}}.dump(2).c_str());
        } else {
          print_fields({{"id", text(s, "id")}, {"name", text(s, "name")}, {"status", text(s, "status")}});
        }
        return 0;
      }
      if (std::chrono::steady_clock::now() >= deadline)
        throw CommandError("server " + o.id + " is still " + text(s, "status") + " after " +
                           std::to_string(static_cast<int>(o.wait_timeout)) + " s (see the controller's log)");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  return 2;
}

}  // namespace volgate::controller
