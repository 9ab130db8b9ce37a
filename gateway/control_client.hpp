#pragma once
// A blocking client of a gateway's control API (`volgate serve --control PATH`), for the
// controller: one connection per call over the unix socket, each call bounded by a timeout.
// Errors are GatewayControlError: the HTTP status (0 when there was no answer) and the
// gateway's message.
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/control_protocol.hpp"

namespace volgate::gateway {

class GatewayControlError : public std::runtime_error {
 public:
  GatewayControlError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  // The HTTP status of the answer; 0 when the gateway could not be reached, did not answer in
  // time or answered something that is not the protocol.
  const int status;
};

class GatewayControlClient {
 public:
  struct Timeouts {
    std::chrono::milliseconds call{std::chrono::seconds(10)};
    // Opening an RBD image or logging in to iSCSI portals takes seconds.
    std::chrono::milliseconds put{std::chrono::seconds(30)};
    // A forced removal waits for the clients' in-flight requests (10 s at most) and a flush.
    std::chrono::milliseconds remove{std::chrono::seconds(30)};
  };

  explicit GatewayControlClient(std::string socket_path) : GatewayControlClient(std::move(socket_path), Timeouts{}) {}
  GatewayControlClient(std::string socket_path, Timeouts timeouts);

  control::Health health() const;
  std::vector<control::ExportInfo> list_exports() const;
  // nullopt when there is no such export.
  std::optional<control::ExportInfo> get_export(const std::string& name) const;

  struct PutResult {
    bool created = false;  // false: the same export was already served (a retry is harmless)
    control::ExportInfo info;
  };
  // Serves `target` as `name`, unlocked with `luks` when given. Throws GatewayControlError with
  // status 409 when `name` is served with another target or read_only, 400 for a target the
  // gateway cannot open or a wrong key.
  PutResult put_export(const std::string& name, const ExportSpec& target, bool read_only,
                       const control::LuksKey* luks = nullptr) const;
  // False when there was no such export. Throws GatewayControlError with status 409 when
  // clients are connected and `force` is false. With `force`, returns once the clients'
  // in-flight requests were answered and their connections closed.
  bool delete_export(const std::string& name, bool force) const;

  const std::string& socket_path() const { return socket_path_; }

 private:
  struct Answer {
    int status = 0;
    control::Json body;
  };
  Answer call(const char* method, const std::string& target, const control::Json* body,
              std::chrono::milliseconds timeout) const;

  std::string socket_path_;
  Timeouts timeouts_;
};

}  // namespace volgate::gateway
