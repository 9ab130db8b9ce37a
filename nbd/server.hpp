#pragma once
// Accepts NBD connections on unix and TCP sockets and spreads them over one worker thread per
// core. Each worker runs its own io_context; a connection stays on the worker that accepted it,
// unless its export's device has a thread of its own (iSCSI), where it moves after the handshake.
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbd/export.hpp"
#include "nbd/session.hpp"

namespace volgate::nbd {

class Server {
 public:
  // How long a graceful stop waits for clients before cutting connections.
  static constexpr std::chrono::seconds kDrainTimeout{10};

  // poll_max: how long a worker busy-polls for the next event before it sleeps, at most (the
  // window adapts to the traffic: see common/adaptive_polling.hpp). Zero: sleep at once.
  Server(ExportTable exports, unsigned threads, std::chrono::microseconds poll_max);
  ~Server();

  // Both throw std::system_error with a message naming the address.
  void listen_unix(const std::string& path);
  void listen_tcp(const std::string& host, uint16_t port);

  // One URI per export and listener, for users to paste into a client.
  std::vector<std::string> uris() const;
  // Exports may be added and removed while serving, from any thread (see ExportTable).
  ExportTable& exports() { return exports_; }
  const ExportTable& exports() const { return exports_; }
  // Stops the sessions attached to `e`, from any thread: gracefully (no new requests, those
  // in flight are answered, then the connection closes) or, with `hard`, at once.
  void close_sessions_of(const Export& e, bool hard);
  // Open NBD connections, handshakes included; from any thread.
  size_t connection_count() const;
  bool stopping() const { return stopping_.load(); }
  // Called on a worker thread when a stop begins (signal or stop()); set before run().
  void on_stop(std::function<void()> callback) { on_stop_ = std::move(callback); }

  // Serves until SIGINT/SIGTERM or stop(), then lets in-flight requests finish and flushes
  // every device. Returns false if the final flush failed.
  bool run();
  // Safe from any thread.
  void stop();

 private:
  struct Worker {
    boost::asio::io_context io{1};
    SessionRegistry sessions;
    std::thread thread;
    // Keeps an idle worker's run() from returning until the server stops.
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
        keep_alive;
  };
  struct Listener {
    boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol> acceptor;
    std::string unix_path;  // empty for TCP
    std::string uri_base;   // "nbd+unix:///%s?socket=..." style prefix pieces
    bool tcp;
  };

  void accept_next(Listener& listener);
  void begin_stop();
  void cancel_drain_timer_when_idle();
  bool flush_all();

  ExportTable exports_;
  const std::chrono::microseconds poll_max_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer drain_timer_;
  boost::asio::steady_timer idle_check_;
  size_t next_worker_ = 0;
  uint64_t connections_ = 0;
  std::atomic<bool> stopping_{false};
  std::function<void()> on_stop_;
  SessionHomes homes_{stopping_};  // device threads that sessions move to
};

}  // namespace volgate::nbd
