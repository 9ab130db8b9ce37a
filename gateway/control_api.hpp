#pragma once
// `volgate serve --control PATH`: the control API's service and HTTP server, bound to a
// running nbd::Server for as long as it serves.
#include <string>
#include <vector>

#include "gateway/control_server.hpp"
#include "gateway/control_service.hpp"
#include "gateway/export_spec.hpp"

namespace volgate::gateway {

class ControlApi {
 public:
  // Listens on `path` (see ControlServer::listen for what throws) and lists the exports the
  // command line gave, `specs`, which `server` serves already.
  // `other_clients`: see ControlService.
  ControlApi(nbd::Server& server, const std::string& path, const std::vector<ExportSpec>& specs,
             ExportClients* other_clients = nullptr)
      : service_(server, other_clients), http_(service_) {
    http_.listen(path);
    for (const auto& spec : specs) service_.adopt(spec, server.exports().find(spec.name));
    // A graceful stop closes the control socket at once; requests in flight still finish.
    server.on_stop([this] { http_.stop(); });
  }

  void start() { http_.start(); }
  void shutdown() { http_.shutdown(); }

 private:
  ControlService service_;
  ControlServer http_;
};

}  // namespace volgate::gateway
