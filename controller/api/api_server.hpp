#pragma once
// The HTTP transport of the REST API (Boost.Beast): a unix socket (mode 0600, so only its owner
// can connect) and/or TCP listeners, a few I/O threads (each request is then handled on a thread
// of its own), HTTP/1.1 keep-alive, and the X-Auth-Token check in front of VolumeApi (all but
// the versions document need it, as in Cinder): the token says who the caller is (its project
// and role, token_table.hpp), which VolumeApi's policy then applies (access_policy.hpp).
//
// No client can hold the server: a connection waits at most `idle` for a request to begin,
// `header` for its header and `body` for its body, and `write` for the answer to be taken (over
// HTTPS, first `handshake` for the TLS handshake to end);
// at most `max_connections` are open at once on TCP and as many on the unix socket (the rest are
// closed at accept), so clients on the network, who need no token to connect, cannot lock the
// operator out; and when the process runs out of descriptors, accepting pauses instead of
// spinning.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "controller/api/api_server_limits.hpp"
#include "controller/api/volume_api.hpp"
#include "controller/api/token_table.hpp"
#include "crypto/tls_credentials.hpp"

namespace volgate::controller {

class ApiServer {
 public:
  // `tokens`: the X-Auth-Token values it accepts, and who each is.
  ApiServer(VolumeApi& api, TokenTable tokens, unsigned threads = 2, ApiServerLimits limits = {});
  ~ApiServer();

  // Replaces a socket file a dead controller left; refuses one a live process listens on, and
  // any other kind of file. Throws std::runtime_error naming the path.
  void listen_unix(const std::string& path);
  // HOST:PORT; port 0 picks a free one. Returns the port bound. With `tls` (x509 credentials,
  // crypto/tls_credentials.hpp) the listener serves HTTPS only.
  uint16_t listen_tcp(const std::string& host_port, std::shared_ptr<const crypto::TlsServerCredentials> tls = {});

  // Serves until stop(); returns after every thread has finished.
  void run();
  void stop();
  boost::asio::io_context& io_context() { return io_; }

  // Used by the sessions.
  ApiResponse handle(std::string_view method, std::string_view target, std::string_view token,
                     const std::string& body, const RequestHeaders& headers = {});
  const ApiServerLimits& limits() const { return limits_; }
  // Runs a request's `handler` on a thread of its own; `refused` instead (on the caller's
  // thread) when no thread can be made.
  void run_handler(std::function<void()> handler, std::function<void()> refused);
  // Where a connection came in: each has its own count under max_connections.
  enum class Door : size_t { network, local };
  // Counts an accepted connection; false (and nothing counted) when its door is full.
  bool admit_connection(Door door);
  void connection_closed(Door door);

 private:
  struct TlsListener;
  // `tls`: the listener's TLS context, null for plain HTTP.
  template <class Acceptor>
  void accept_loop(Acceptor& acceptor, TlsListener* tls = nullptr);
  template <class Acceptor>
  void pause_accepting(Acceptor& acceptor, TlsListener* tls, const boost::system::error_code& ec);

  VolumeApi& api_;
  const TokenTable tokens_;
  unsigned threads_;
  ApiServerLimits limits_;
  boost::asio::io_context io_;
  std::vector<std::string> unix_paths_;
  struct Listeners;
  std::unique_ptr<Listeners> listeners_;
  std::atomic<size_t> connections_[2]{0, 0};  // by Door
  // Handlers still running (run_handler's threads): waited for before the server goes.
  void wait_for_handlers();
  std::mutex handlers_mutex_;
  std::condition_variable handlers_done_;
  size_t handlers_running_ = 0;
  // Accept failures since the last log line about them (logged at most once per back-off).
  std::atomic<uint64_t> refused_full_{0};
};

}  // namespace volgate::controller
