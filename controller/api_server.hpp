#pragma once
// The HTTP transport of the REST API (Boost.Beast): a unix socket (mode 0600, so only its owner
// can connect) and/or TCP listeners, a few threads, HTTP/1.1 keep-alive, and the X-Auth-Token
// check in front of VolumeApi.
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controller/volume_api.hpp"

namespace volgate::controller {

class ApiServer {
 public:
  // `token`: what X-Auth-Token must carry (compared in constant time).
  ApiServer(VolumeApi& api, std::string token, unsigned threads = 2);
  ~ApiServer();

  // Replaces a socket file a dead controller left; refuses one a live process listens on, and
  // any other kind of file. Throws std::runtime_error naming the path.
  void listen_unix(const std::string& path);
  // HOST:PORT; port 0 picks a free one. Returns the port bound.
  uint16_t listen_tcp(const std::string& host_port);

  // Serves until stop(); returns after every thread has finished.
  void run();
  void stop();
  boost::asio::io_context& io_context() { return io_; }

  // Used by the sessions.
  ApiResponse handle(const std::string& method, const std::string& target, const std::string& token,
                     const std::string& body);

 private:
  VolumeApi& api_;
  std::string token_;
  unsigned threads_;
  boost::asio::io_context io_;
  std::vector<std::string> unix_paths_;
  struct Listeners;
  std::unique_ptr<Listeners> listeners_;
};

}  // namespace volgate::controller
