#pragma once
// Accepts NBD connections on unix and TCP sockets and spreads them over one worker thread per
// core. Each worker runs its own io_context; a connection stays on the worker that accepted it,
// unless its export's device has a thread of its own (iSCSI), where it moves after the handshake.
//
// What clients can make the server hold is bounded (ServerLimits): connections, the bytes of
// requests and replies buffered across all of them, and the time a handshake may take. When
// descriptors run out, accepting pauses instead of spinning.
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
#include <mutex>
#include <pthread.h>
#include <string>
#include <sys/types.h>
#include <time.h>
#include <thread>
#include <vector>

#include "common/log_throttle.hpp"
#include "common/metrics_report.hpp"
#include "common/stop_deadline.hpp"
#include "nbd/buffer_budget.hpp"
#include "nbd/connection_limit.hpp"
#include "nbd/export.hpp"
#include "nbd/export_flush.hpp"
#include "crypto/tls_credentials.hpp"
#include "nbd/session.hpp"

namespace volgate::nbd {

struct ServerLimits {
  // Enough for hundreds of guests with a few connections each (QEMU's multi-conn).
  static constexpr size_t kDefaultMaxConnections = 1024;
  // Eight of the largest requests (32 MiB), hundreds of ordinary ones.
  static constexpr size_t kDefaultMaxBufferBytes = size_t{256} << 20;
  static constexpr std::chrono::seconds kDefaultHandshakeTimeout{10};

  size_t max_connections = kDefaultMaxConnections;
  // Request payloads and read replies buffered across all connections. A connection holding
  // none of it may still take one request past it (see BufferBudget::take_anyway).
  size_t max_buffer_bytes = kDefaultMaxBufferBytes;
  std::chrono::milliseconds handshake_timeout = kDefaultHandshakeTimeout;
  // The stop's last flush of every export (export_flush.hpp).
  std::chrono::milliseconds final_flush_timeout = kFinalFlushTimeout;
  // How long a stop waits for clients before cutting their connections, and then for the
  // storage to answer the requests they left in flight: a worker still waiting after that is
  // left running (see common/stop_deadline.hpp). With the final flush's bound the defaults keep
  // a stop within 28 s (systemd's TimeoutStopSec is 30).
  std::chrono::milliseconds drain_timeout = kDefaultDrainTimeout;
  std::chrono::milliseconds in_flight_grace = StopDeadline::kDefaultGrace;
  static constexpr std::chrono::seconds kDefaultDrainTimeout{10};
};

// NBD_OPT_STARTTLS: the mode, and the credentials it uses unless it is off.
struct ServerTls {
  TlsMode mode = TlsMode::off;
  std::shared_ptr<const crypto::TlsServerCredentials> credentials;
};

class Server {
 public:
  // How long a graceful stop waits for clients before cutting connections, by default.
  static constexpr std::chrono::seconds kDrainTimeout = ServerLimits::kDefaultDrainTimeout;
  // After an accept fails for want of descriptors or memory, accepting pauses this long,
  // doubling while it keeps failing, up to the maximum.
  static constexpr std::chrono::milliseconds kFirstAcceptPause{100};
  static constexpr std::chrono::milliseconds kLongestAcceptPause{1000};

  // poll_max: how long a worker busy-polls for the next event before it sleeps, at most (the
  // window adapts to the traffic: see common/adaptive_polling.hpp). Zero: sleep at once.
  Server(ExportTable exports, unsigned threads, std::chrono::microseconds poll_max,
         ServerLimits limits = {}, ServerTls tls = {});
  ~Server();

  // Both throw std::system_error with a message naming the address.
  // The socket is created 0600; with `group`, it then goes to that group, mode 0660.
  void listen_unix(const std::string& path, std::optional<gid_t> group = std::nullopt);
  // Warns in the log when the address is not a loopback one.
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
  // Times requests for the export latency histograms (see SessionShared::measure_latency).
  // Before run().
  void measure_latency(bool on) { measure_latency_ = on; }
  // Every export's counters and device metrics, and the workers' CPU and polling time. From
  // any thread.
  void report_metrics(MetricsReport& report) const;

  // Called on a worker thread when a stop begins (signal or stop()); set before run(). Each
  // call adds one; they run in the order added.
  void on_stop(std::function<void()> callback) { on_stop_.push_back(std::move(callback)); }

  // Hand-over to another process (gateway/handover_source.hpp drives it), from a thread that
  // is not one of the server's. pause_for_handover() stops accepting and pauses every session
  // (see SessionPause), returning the connections paused by `deadline`; those later close. A
  // stop asked for meanwhile (a signal) waits until the hand-over ends, by one of:
  std::vector<PausedConnection> pause_for_handover(std::chrono::steady_clock::time_point deadline);
  // it failed: accepting and every paused session go on as before;
  void resume_after_handover();
  // it succeeded: paused sessions let go of their connections without a word to the client,
  // listeners close and leave their socket files to the successor, and the server stops.
  void finish_handover();
  // The listening sockets, to hand over (their descriptors stay ours).
  std::vector<int> listening_descriptors();

  // The successor's side, before run(). A listening socket the predecessor handed over (unix
  // or TCP, bound and listening): served as if listen_unix/listen_tcp had made it. Throws
  // std::system_error when the descriptor is not a listening stream socket.
  void adopt_listener(int fd);
  // A connection the predecessor paused: its session goes on where that one stopped. False
  // (the descriptor closed) when its export is not served here or no connection slot is free.
  bool adopt_connection(PausedConnection connection);

  // Serves until SIGINT/SIGTERM or stop(), then lets in-flight requests finish and flushes
  // every device, giving the storage ServerLimits::final_flush_timeout to answer. Returns false
  // if the final flush failed or did not finish, or requests were still unanswered
  // ServerLimits::drain_timeout + in_flight_grace after the stop began.
  bool run();
  // After run(): some export's storage did not answer, a request or the final flush, in time.
  // Its device may still have requests in its library (librbd), whose teardown would wait for
  // them, and worker threads waiting for them may still run: the caller must end the process
  // (std::_Exit, after remove_socket_files()) instead of destroying the server.
  bool storage_unanswered() const { return storage_unanswered_; }
  // Removes the unix socket files this server listens on (the destructor does it too).
  void remove_socket_files();
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
    // Time spent busy-polling (see run_with_adaptive_polling); written by the worker only.
    std::atomic<uint64_t> polled_ns{0};
    // The thread's CPU-time clock, for the metrics; set by run() once the thread exists.
    std::optional<clockid_t> cpu_clock;
  };
  struct Listener {
    Listener(boost::asio::io_context& io, std::string unix_path, bool tcp)
        : acceptor(io), unix_path(std::move(unix_path)), tcp(tcp), retry(io) {}
    boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol> acceptor;
    std::string unix_path;  // empty for TCP
    std::string uri_base;   // "nbd+unix:///%s?socket=..." style prefix pieces
    bool tcp;
    std::string where;      // for the log: the path, or HOST:PORT
    boost::asio::steady_timer retry;       // accepting paused after a failure
    std::chrono::milliseconds pause{0};    // how long the last pause was; zero after a success
  };

  void accept_next(Listener& listener);
  // Names a TCP listener for the log and its URIs, and warns when it is not on loopback.
  void describe_tcp_listener(Listener& listener);
  void on_accept_failed(Listener& listener, const boost::system::error_code& ec);
  void hand_to_worker(Listener& listener, boost::asio::generic::stream_protocol::socket socket);
  void begin_stop();
  void cancel_drain_timer_when_idle();
  bool flush_all();

  ExportTable exports_;
  const ServerTls tls_;
  const std::chrono::microseconds poll_max_;
  bool measure_latency_ = false;
  mutable std::mutex metrics_mutex_;  // guards the workers' cpu_clock
  BufferBudget buffers_;
  ConnectionLimit connection_limit_;
  const SessionShared shared_;  // exports_, buffers_, homes_ and the handshake timeout
  // Accepts run on worker 0 only, and so do these.
  LogThrottle refused_log_{std::chrono::seconds(1)};
  LogThrottle accept_failed_log_{std::chrono::seconds(1)};
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer drain_timer_;
  boost::asio::steady_timer idle_check_;
  size_t next_worker_ = 0;
  uint64_t accepted_ = 0;  // connections accepted so far, to number them in the log
  std::atomic<bool> stopping_{false};
  // Hand-over, on worker 0 only: between pause_for_handover and its outcome, accepting is
  // paused and a stop is put off until the outcome.
  bool handing_over_ = false;
  bool stop_put_off_ = false;
  bool handed_over_ = false;  // finish_handover() ran; read by run() once the workers are gone
  const std::chrono::milliseconds final_flush_timeout_;
  const std::chrono::milliseconds drain_timeout_;
  const std::chrono::milliseconds in_flight_grace_;
  bool storage_unanswered_ = false;  // set by run() once the workers ended or were left
  StopDeadline stop_deadline_;       // how long run() waits for the workers once stopping
  std::vector<std::function<void()>> on_stop_;
  SessionHomes homes_{stopping_};  // device threads that sessions move to
};

}  // namespace volgate::nbd
