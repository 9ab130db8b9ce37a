#pragma once
// What one API client may hold of the controller: how long each phase of a request may take
// and how many connections may be open. Configurable as "api_limits" (see README).
#include <chrono>
#include <cstddef>

namespace volgate::controller {

struct ApiServerLimits {
  std::chrono::milliseconds idle{std::chrono::seconds(60)};    // before a request's first byte
  std::chrono::milliseconds header{std::chrono::seconds(10)};  // from the first byte to the header's end
  std::chrono::milliseconds body{std::chrono::seconds(30)};    // for the body (at most 1 MiB)
  std::chrono::milliseconds write{std::chrono::seconds(30)};   // for the client to take the answer
  // HTTPS: from the connection's accept to the TLS handshake's end.
  std::chrono::milliseconds handshake{std::chrono::seconds(10)};
  size_t max_connections = 256;
  // How long accepting pauses when the process is out of descriptors (EMFILE and the like).
  std::chrono::milliseconds accept_backoff{200};
};

}  // namespace volgate::controller
