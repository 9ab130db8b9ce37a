#pragma once
// What every client command (volume, snapshot, backup, pool, quota, attachment) shares: its
// error, the API client built from --url/--token-file/--project, table and field printing, and
// waiting for a status with a progress bar.
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "controller/api/api_client.hpp"
#include "controller/cli/volume_command.hpp"

namespace volgate::controller {

// A failure the command reports on one line (exit code 2).
class CommandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The controller's API for one project, as the options name it.
class Client {
 public:
  // `api_version`: the microversion of `service` to ask for ("3.44"), empty for the base version.
  explicit Client(const ClientCommandOptions& o, const std::string& api_version = {},
                  const std::string& service = "volume");

  // METHOD /v3/PROJECT/PATH. A fault throws CommandError with its message, except a 404 when
  // `status` is given (it is set to every answer's status).
  nlohmann::json call(const std::string& method, const std::string& path,
                      const std::optional<nlohmann::json>& body = std::nullopt, int* status = nullptr);
  // The same for a path outside /v3/PROJECT (Nova's /v2.1/...).
  nlohmann::json call_path(const std::string& method, const std::string& path,
                           const std::optional<nlohmann::json>& body = std::nullopt, int* status = nullptr);

 private:
  const ClientCommandOptions& o_;
  ApiClient api_;
};

// j[key] as text: strings as they are, null or absent as "-", anything else as JSON.
std::string text(const nlohmann::json& j, const char* key);
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
// "key  value" lines, the values aligned.
void print_fields(const std::vector<std::pair<std::string, std::string>>& fields);

// Polls `path` until its `root` object's status leaves `transient`; returns the object, or
// nothing when it is gone (404). `copy`: the operation copies data, so a progress bar
// ("[#####.....]  42%", from volgate:progress) is drawn on stderr when it is a terminal or
// o.progress asks for it.
std::optional<nlohmann::json> wait_while(Client& client, const ClientCommandOptions& o, const std::string& path,
                                         const char* root, const std::string& transient, bool copy = false);

}  // namespace volgate::controller
