#pragma once
// The HTTP side of the gateway's control API: HTTP/1.1 on a unix socket that only its owner
// (and root) may use, on a thread of its own. Each request goes to ControlService.
//
// The socket is created 0600, and each connection's peer is checked with SO_PEERCRED as well,
// so a socket made reachable by a later chmod still answers no one else. Every phase of a
// request has a deadline and bodies are bounded; request bytes, which may carry a volume key,
// live only in buffers that are wiped when freed.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "common/log_throttle.hpp"
#include "common/unique_fd.hpp"
#include "gateway/control_service.hpp"

namespace volgate::gateway {

struct ControlServerLimits {
  std::chrono::milliseconds idle{std::chrono::seconds(60)};    // before a request's first byte
  std::chrono::milliseconds header{std::chrono::seconds(10)};  // from then to the header's end
  std::chrono::milliseconds body{std::chrono::seconds(10)};    // for the body (64 KiB at most)
  std::chrono::milliseconds write{std::chrono::seconds(30)};   // for the client to take the answer
  size_t max_connections = 16;  // one controller needs one or two
  std::chrono::milliseconds accept_backoff{200};  // when out of descriptors
};

// POST /v1/handover (see gateway/handover_state.hpp): the request is checked first; when
// accepted, the connection is answered 101 and handed, as a bare socket, to `run`, which holds
// the server's thread until the hand-over ends.
struct HandoverHandler {
  // An error answer when a hand-over cannot start; nullopt to start it.
  std::function<std::optional<ControlResponse>(const WipingString& body)> refuse;
  std::function<void(UniqueFd connection)> run;
};

class ControlServer {
 public:
  ControlServer(ControlService& service, ControlServerLimits limits = {});
  ~ControlServer();  // after shutdown()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Throws std::runtime_error (one line) when `path` exists and is not a socket, or another
  // process listens on it; a socket file left by a dead process is replaced.
  void listen(const std::string& path);
  // Serves on a listening socket a predecessor handed over (its path from getsockname).
  // Throws std::runtime_error when it is not a listening unix stream socket.
  void adopt(UniqueFd listening);
  int listening_descriptor() { return acceptor_.native_handle(); }
  // After a hand-over: the socket file is the successor's, stop() must leave it.
  void forget_socket_file() { path_.clear(); }
  // Before start().
  void set_handover_handler(HandoverHandler handler) { handover_ = std::move(handler); }
  // Serves on a thread of its own until shutdown().
  void start();
  // Stops accepting and removes the socket file; from any thread. Connections open now still
  // get the answer to a request being handled.
  void stop();
  // stop(), then waits for the thread; an unfinished request's connection is closed.
  void shutdown();

 private:
  class Connection;
  friend class Connection;

  void accept_next();
  bool admit();
  void closed() { connections_.fetch_sub(1); }

  ControlService& service_;
  const ControlServerLimits limits_;
  // Before io_: connections dropped with io_'s pending handlers still count themselves out.
  std::atomic<size_t> connections_{0};
  boost::asio::io_context io_{1};
  boost::asio::local::stream_protocol::acceptor acceptor_{io_};
  std::string path_;
  // Refused and failed accepts come in floods (out of descriptors, a client reconnecting in a
  // loop): a line a second each, on the server's thread.
  LogThrottle refused_log_{std::chrono::seconds(1)};
  LogThrottle accept_failed_log_{std::chrono::seconds(1)};
  HandoverHandler handover_;
  std::thread thread_;
};

}  // namespace volgate::gateway
