#pragma once
// What the controller asks of the gateway on its host: serve a volume under an export name,
// stop serving it, and say what it serves. GatewayControlExports does it through the gateway's
// control socket (`volgate serve --control`); unit tests put a fake in its place to inject
// failures.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/control_client.hpp"
#include "gateway/control_protocol.hpp"
#include "gateway/export_spec.hpp"

namespace volgate::controller {

class GatewayExports {
 public:
  struct Served {
    std::string name;
    uint32_t connections = 0;
  };

  virtual ~GatewayExports() = default;

  // Serves `target` as `name`, unlocked with `key` when given. Idempotent: an export already
  // served with the same target is left as it is. Throws gateway::GatewayControlError.
  virtual void publish(const std::string& name, const gateway::ExportSpec& target, bool read_only,
                       const gateway::control::LuksKey* key) = 0;
  // Stops serving `name`; its clients' requests in flight are answered first, then they are
  // disconnected. False when it was not served.
  virtual bool withdraw(const std::string& name) = 0;
  virtual std::vector<Served> list() = 0;
  // The gateway process's id, which changes when it restarts. Throws when it is unreachable.
  virtual int64_t instance() = 0;
  // Where a host's NBD client reaches the exports.
  virtual const std::string& nbd_socket() const = 0;
};

class GatewayControlExports final : public GatewayExports {
 public:
  GatewayControlExports(std::string control_socket, std::string nbd_socket)
      : client_(std::move(control_socket)), nbd_socket_(std::move(nbd_socket)) {}

  void publish(const std::string& name, const gateway::ExportSpec& target, bool read_only,
               const gateway::control::LuksKey* key) override {
    client_.put_export(name, target, read_only, key);
  }
  bool withdraw(const std::string& name) override { return client_.delete_export(name, /*force=*/true); }
  std::vector<Served> list() override;
  int64_t instance() override { return client_.health().pid; }
  const std::string& nbd_socket() const override { return nbd_socket_; }

 private:
  gateway::GatewayControlClient client_;
  std::string nbd_socket_;
};

}  // namespace volgate::controller
