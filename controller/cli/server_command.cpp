#include "controller/cli/server_command.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include "controller/cli/command_client.hpp"

namespace volgate::controller {

using nlohmann::json;

int server_command(const std::string& name, const ClientCommandOptions& o) {
  Client client(o);
  if (name == "list") {
    json list = client.call_path("GET", "/v2.1/servers/detail")["servers"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"servers", list}}.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : list) rows.push_back({text(s, "id"), text(s, "name"), text(s, "status")});
    print_table({"ID", "NAME", "STATUS"}, rows);
    return 0;
  }
  if (name == "show") {
    json s = client.call_path("GET", "/v2.1/servers/" + o.id)["server"];
    if (o.output == "json") {
      std::printf("%s\n", json{{"server", s}}.dump(2).c_str());
      return 0;
    }
    print_fields({{"id", text(s, "id")},
                  {"name", text(s, "name")},
                  {"status", text(s, "status")},
                  {"vm_state", text(s, "OS-EXT-STS:vm_state")},
                  {"persistent", text(s, "volgate:persistent")}});
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
