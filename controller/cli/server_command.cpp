#include "controller/cli/server_command.hpp"

#include <cstdio>

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
  return 2;
}

}  // namespace volgate::controller
