#pragma once
// The /metrics endpoint Prometheus scrapes: a small HTTP/1.1 server (Boost.Beast) on a TCP
// address, on a thread of its own, so a scrape never waits for the data path and the data path
// never waits for a scrape.
//
// GET (or HEAD) /metrics answers what `collect` returns, in the text exposition format; any
// other path is 404, any other method 405. What a client can make it hold is bounded: a few
// connections at once (one more is closed at once), 8 KiB of request line and headers, no
// body, and deadlines on reading a request, on an idle keep-alive connection and on sending
// the answer.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace volgate {

struct MetricsServerLimits {
  size_t max_connections = 16;
  size_t max_header_bytes = 8 * 1024;
  std::chrono::milliseconds request_timeout{5000};  // from the first byte of a request to its end
  std::chrono::milliseconds idle_timeout{30000};    // a keep-alive connection between requests
  std::chrono::milliseconds write_timeout{10000};   // sending the answer
};

// "HOST:PORT", "[V6ADDR]:PORT", or a bare "PORT" for 127.0.0.1. Throws std::invalid_argument
// naming `option` (e.g. "--metrics").
boost::asio::ip::tcp::endpoint parse_metrics_address(const std::string& text, const std::string& option);

class MetricsHttpServer {
 public:
  using Collect = std::function<std::string()>;

  // Binds at once (std::system_error naming the address when it cannot); serving starts with
  // start(). Warns in the log when the address is not a loopback one.
  MetricsHttpServer(const boost::asio::ip::tcp::endpoint& endpoint, Collect collect,
                    MetricsServerLimits limits = {});
  // Serves on a listening TCP socket another process handed over (volgate serve --take-over);
  // takes the descriptor, also when it throws.
  MetricsHttpServer(int listening_fd, Collect collect, MetricsServerLimits limits = {});
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The address bound (the kernel's port when given port 0), as HOST:PORT.
  const std::string& address() const { return address_; }
  // For a hand-over to a successor.
  int listening_descriptor() { return acceptor_.native_handle(); }
  uint16_t port() const { return port_; }
  void start();
  // Closes every connection and joins the thread; also done by the destructor.
  void stop();

 private:
  class Connection;
  void accept_next();
  void describe_bound_address();

  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::acceptor acceptor_;
  const Collect collect_;
  const MetricsServerLimits limits_;
  std::shared_ptr<size_t> open_;  // connections open; touched only on the server's thread
  std::string address_;
  uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace volgate
