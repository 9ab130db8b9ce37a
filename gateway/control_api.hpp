#pragma once
// `volgate serve --control PATH`: the control API's service and HTTP server, bound to a
// running nbd::Server for as long as it serves, and the hand-over it offers a successor.
#include <optional>
#include <string>
#include <vector>

#include "gateway/control_server.hpp"
#include "gateway/control_service.hpp"
#include "gateway/export_spec.hpp"
#include "gateway/handover_source.hpp"

namespace volgate::gateway {

class ControlApi {
 public:
  // Listens on `path` (see ControlServer::listen for what throws) and lists the exports the
  // command line gave, `specs`, which `server` serves already.
  // `other_clients`: see ControlService.
  ControlApi(nbd::Server& server, const std::string& path, const std::vector<ExportSpec>& specs,
             ExportClients* other_clients = nullptr)
      : server_(server), service_(server, other_clients), http_(service_) {
    http_.listen(path);
    for (const auto& spec : specs) service_.adopt(spec, server.exports().find(spec.name));
    stop_with(server);
  }

  // A successor's: serves on the control socket the predecessor handed over, listing the
  // exports it served (which `server` serves now).
  ControlApi(nbd::Server& server, UniqueFd listening, const std::vector<handover::ExportDefinition>& exports)
      : server_(server), service_(server), http_(service_) {
    http_.adopt(std::move(listening));
    for (const auto& d : exports) service_.adopt(d, server.exports().find(d.name));
    stop_with(server);
  }

  // Lets a successor take over through POST /v1/handover (see HandoverSource). `unsupported`:
  // why this process cannot hand over (e.g. it serves --fuse), or empty. Before start().
  void enable_handover(handover::Settings settings, int metrics_fd, std::string unsupported) {
    handover_.emplace(HandoverSource::Parts{server_, service_, std::move(settings), http_.listening_descriptor(),
                                            metrics_fd, std::move(unsupported),
                                            [this] { http_.forget_socket_file(); }});
    http_.set_handover_handler({[this](const WipingString& body) { return handover_->refuse(body); },
                                [this](UniqueFd connection) { handover_->run(std::move(connection)); }});
  }

  void start() { http_.start(); }
  void shutdown() { http_.shutdown(); }

 private:
  // A graceful stop closes the control socket at once; requests in flight still finish.
  void stop_with(nbd::Server& server) {
    server.on_stop([this] { http_.stop(); });
  }

  nbd::Server& server_;
  ControlService service_;
  ControlServer http_;
  std::optional<HandoverSource> handover_;
};

}  // namespace volgate::gateway
