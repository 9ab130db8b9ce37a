#pragma once
// One client connection: the handshake, then the transmission phase with many requests in
// flight, answered in whatever order the device completes them.
//
// Everything of a session runs on one io_context at a time, so it needs no locks: the worker's
// that accepted it, or, from the end of the handshake, its device's own thread when the device
// has one (BlockDevice::home_context), where a request then never changes thread.
// Reads of the socket are batched into a receive buffer (several requests per recv), replies
// are gathered into one sendmsg, and the number and bytes of requests in flight are bounded,
// which bounds the memory a connection can pin; the bytes all connections pin together are
// bounded by the server's BufferBudget.
#include <utility>  // before awaitable.hpp, which uses std::exchange without it (Boost 1.74)

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backends/device_front.hpp"
#include "common/buffer_pool.hpp"
#include "crypto/tls_stream.hpp"
#include "nbd/buffer_budget.hpp"
#include "nbd/codec.hpp"
#include "nbd/connection_limit.hpp"
#include "nbd/export.hpp"
#include "nbd/negotiation.hpp"
#include "nbd/session_pause.hpp"

namespace volgate::crypto {
class TlsServerCredentials;
}

namespace volgate::nbd {

class SessionRegistry;
class SessionHomes;

// What all sessions of one server share. It outlives them.
struct SessionShared {
  const ExportTable& exports;
  BufferBudget& buffers;
  // How long a client may take from connecting to the end of the handshake. Zero: no limit.
  std::chrono::milliseconds handshake_timeout{0};
  // The device threads sessions move to after the handshake; null: they stay where they are.
  const SessionHomes* homes = nullptr;
  // NBD_OPT_STARTTLS (see TlsMode); credentials are set unless the mode is off.
  TlsMode tls_mode = TlsMode::off;
  const crypto::TlsServerCredentials* tls = nullptr;
  // Whether requests are timed for the latency histograms (two clock reads per request): only
  // while metrics are served. Set before the first session starts.
  const bool* measure_latency = nullptr;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;

  static constexpr size_t kMaxRequestsInFlight = 256;
  static constexpr size_t kMaxBytesInFlight = 64 * 1024 * 1024;
  // Read payload bytes worth sending without waiting for the rest of a batch.
  static constexpr size_t kEagerSendBytes = 256 * 1024;

  // `slot` is the connection's place under the server's connection limit, held until the
  // connection closes.
  Session(Socket socket, const SessionShared& shared, SessionRegistry& registry, std::string peer,
          ConnectionLimit::Slot slot = {});
  ~Session();

  void start();
  // On `io`'s own thread: takes up a connection descriptor released on another thread and
  // starts a session for it there, unless the server is stopping (then the connection closes).
  static void adopt(int fd, const Socket::protocol_type& protocol, boost::asio::io_context& io,
                    SessionRegistry& registry, const SessionShared& shared, std::string peer,
                    ConnectionLimit::Slot slot = {});
  // Graceful stop: requests in flight finish and are answered, and no other is read. In flight
  // are the requests whose bytes had all reached our socket by then, parsed yet or not; a
  // connection still in the handshake is ended.
  void shutdown();
  // Hard stop: drop the connection now; requests in flight finish but are not answered.
  void abort();
  // The export this session serves requests of; null during the handshake.
  const Export* attached_export() const { return attached_.get(); }

  // A connection another gateway process handed over (see Server::adopt_connection): its
  // handshake happened there, and `unparsed` is what that process had read and not served.
  static void adopt_handed_over(int fd, const Socket::protocol_type& protocol,
                                boost::asio::io_context& io, SessionRegistry& registry,
                                const SessionShared& shared, std::string peer,
                                ConnectionLimit::Slot slot, NegotiatedSession negotiated,
                                std::vector<std::byte> unparsed);

  // Hand-over (see SessionPause), on the session's own thread. pause(): read no request past
  // the next boundary, answer everything read, then report the connection to `pause` and
  // wait, idle. A session still in its handshake finishes it first; one running TLS closes
  // gracefully instead (its TLS state cannot move), as does one that cannot pause in time.
  void pause(std::shared_ptr<SessionPause> pause);
  // The hand-over failed: go on reading as if nothing happened.
  void resume();
  // The hand-over succeeded: let go of the descriptor without touching the connection, which
  // the successor serves now, and end.
  void release();

 private:
  struct Request;
  // What a session takes along when it moves after the handshake.
  struct Handshake {
    NegotiatedSession negotiated;
    std::vector<std::byte> unparsed;  // received after the last option, not yet read
    ConnectionLimit::Slot slot;
    std::unique_ptr<crypto::TlsStream> tls;  // the connection's TLS, if it started TLS
  };

  // The second half of a session that moved to its device's thread.
  Session(Socket socket, const SessionShared& shared, SessionRegistry& registry, std::string peer,
          Handshake handshake);
  // adopt(), for a new connection (no handshake yet) or one that moved after it.
  static void adopt(int fd, const Socket::protocol_type& protocol, boost::asio::io_context& io,
                    SessionRegistry& registry, const SessionShared& shared, std::string peer,
                    ConnectionLimit::Slot slot, std::optional<Handshake> handshake);

  boost::asio::awaitable<void> run(std::shared_ptr<Session> self);
  boost::asio::awaitable<bool> negotiate();
  // After STARTTLS was acknowledged: the TLS handshake, within the handshake timeout.
  boost::asio::awaitable<bool> start_tls();
  // The socket's reads and writes through TLS; `ec` set (and 0 returned) when the connection
  // ended or failed.
  boost::asio::awaitable<size_t> tls_read_some(std::byte* out, size_t length,
                                               boost::system::error_code& ec);
  boost::asio::awaitable<bool> tls_write_all(const std::byte* data, size_t length);
  // Waits until the socket is ready for what TLS asked for. False if the wait failed.
  boost::asio::awaitable<bool> tls_wait(crypto::TlsStream::Status want);
  // Closes a connection still in the handshake when the handshake timeout runs out.
  void start_handshake_timer();
  // After the handshake: takes the chosen export's device and its limits. False when the
  // export was removed meanwhile: the session then closes.
  bool attach();
  // Moves the connection to the chosen device's home thread, if it has one and this is not it.
  // True when it did: this session then ends without closing the socket.
  bool move_home();
  // Returns true when it stopped for a pause rather than because the session ends.
  boost::asio::awaitable<bool> transmit();
  // At the pause point: reports the connection and waits for the outcome. True: resumed.
  boost::asio::awaitable<bool> stay_paused();
  // Stops a read that waits for the next request header so the session can pause, unless a
  // reply is being written (the cancel would stop that too: on_written() calls this again).
  void interrupt_header_wait();
  uint64_t consumed() const;
  bool beyond_receive_limit(uint64_t bytes) const;
  boost::asio::awaitable<bool> fill(size_t needed);
  boost::asio::awaitable<bool> read_payload(std::byte* out, size_t length);
  boost::asio::awaitable<bool> discard(uint64_t length);
  boost::asio::awaitable<bool> send(const Bytes& bytes);
  boost::asio::awaitable<void> wait_until_signalled();
  void signal();
  // Takes `bytes` of the server's buffer budget for a request's payload or reply, waiting while
  // the budget is spent (unless this connection holds none of it). False if the session stops
  // meanwhile.
  boost::asio::awaitable<bool> reserve_buffer(size_t bytes);
  // The budget's news that bytes came back, on the thread that released them.
  void budget_released();

  uint32_t validate(const RequestHeader& header) const;
  void dispatch(Request* request);
  void complete(Request* request, std::error_code ec);
  void complete_with_error(Request* request, uint32_t error, std::string_view message);
  // Counts a request answered with `error` (0: success) in its export's counters.
  void count_answer(const Request* request, uint32_t error);
  void queue_reply(Request* request);
  void schedule_write();
  void start_write();
  // Moves ready replies into writing_batch_ and iov_, as many as one write takes.
  void gather_replies();
  // Sends iov_ through TLS; when the socket is full, waits for it and goes on by itself.
  void tls_send_batch();
  void on_written(const boost::system::error_code& ec);
  Request* acquire();
  void recycle(Request* request);
  void close_socket();

  Socket socket_;
  // Set once NBD_OPT_STARTTLS was acknowledged: every byte from then on goes through it.
  std::unique_ptr<crypto::TlsStream> tls_;
  // TLS sending: how far into iov_ the batch has gone, and a record's worth of small pieces
  // (reply headers, short reads) gathered so that they share one record and one send.
  size_t tls_piece_ = 0;
  size_t tls_offset_ = 0;
  std::vector<std::byte> tls_stage_;
  size_t tls_stage_sent_ = 0;
  const SessionShared& shared_;
  SessionRegistry& registry_;
  const std::string peer_;
  ConnectionLimit::Slot slot_;
  bool moved_in_ = false;   // this session continues one that moved here after the handshake
  bool moved_out_ = false;  // the connection went on to the device's thread
  Negotiation negotiation_;
  NegotiatedSession negotiated_;
  std::shared_ptr<const Export> attached_;  // counted in its connections while set
  ExportCounters::Slot* counters_ = nullptr;  // this thread's slot of attached_'s counters
  bool timed_ = false;                         // requests are timed (SessionShared::measure_latency)
  // The attached export's device, its size and capabilities read once for this connection.
  std::optional<backends::DeviceFront> front_;

  // Receive buffer: bytes [rx_begin_, rx_end_) are received and not yet parsed.
  std::unique_ptr<std::byte[]> rx_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;
  uint64_t received_ = 0;  // bytes read from the socket, rx_ or straight into payloads
  bool after_large_write_ = false;  // the last request was a large WRITE: see fill()
  // Set by shutdown() after the handshake: the end of what the client had sent by then (a
  // count of received_). Requests that end before it are read and served; nothing after it.
  std::optional<uint64_t> receive_limit_;

  std::vector<std::unique_ptr<Request>> all_requests_;
  std::vector<Request*> free_requests_;
  size_t requests_in_flight_ = 0;
  size_t bytes_in_flight_ = 0;

  std::deque<Request*> ready_;            // answered, waiting for the socket
  size_t ready_payload_bytes_ = 0;        // read payload bytes among them
  std::vector<Request*> writing_batch_;   // in the current sendmsg
  std::vector<boost::asio::const_buffer> iov_;
  bool writing_ = false;
  bool write_posted_ = false;
  bool reading_batch_ = false;  // the reader is dispatching; it sends replies when it next waits

  bool stopping_ = false;  // DISC, or shutdown() in the handshake: read no more requests
  bool broken_ = false;    // the socket failed or the client broke the protocol
  bool poller_ = false;    // counted in registry_'s pollers
  boost::asio::steady_timer wake_;
  bool waiting_ = false;     // suspended in wait_until_signalled()
  bool signalled_ = false;   // signal() ran since wait_until_signalled() began

  BufferBudget::Waiter budget_waiter_;  // queued while reserve_buffer() waits

  // Hand-over: set by pause() until resume(); see SessionPause.
  std::shared_ptr<SessionPause> pause_;
  bool pause_reported_ = false;  // the connection went to pause_ (or was refused there)
  bool handed_over_ = false;     // and pause_ took it
  bool released_ = false;        // release(): the successor has the connection
  bool awaiting_header_ = false; // transmit() waits for the bytes of a request header
  bool header_wait_interrupted_ = false;

  boost::asio::steady_timer handshake_timer_;
  bool negotiating_ = false;          // in negotiate(), where the handshake timeout applies
  bool handshake_timed_out_ = false;  // and it ran out
};

// The sessions of one worker thread, so a server shutdown can reach each of them.
// The list is only touched on the worker's own thread; the count may be read from anywhere.
class SessionRegistry {
 public:
  void add(Session* s);
  void remove(Session* s);
  void shutdown_all();
  void abort_all();
  // The same, for the sessions attached to `e` only.
  void shutdown_export(const Export* e);
  void abort_export(const Export* e);
  // Hand-over: Session::pause, resume and release for every session.
  void pause_all(const std::shared_ptr<SessionPause>& pause);
  void resume_all();
  void release_all();
  size_t size() const { return count_.load(std::memory_order_acquire); }
  bool empty() const { return size() == 0; }
  // Sessions whose device completes fast enough for their worker to busy-poll for them
  // (DeviceCapabilities::fast_completions). Only touched on the worker's own thread.
  void add_poller() { ++pollers_; }
  void remove_poller() { --pollers_; }
  bool wants_polling() const { return pollers_ > 0; }

 private:
  std::vector<Session*> sessions_;
  std::atomic<size_t> count_{0};
  size_t pollers_ = 0;
};

// The device threads that sessions move to after the handshake (see Session), each with the
// registry of the sessions it runs. The server fills it before it accepts a connection and
// reads it afterwards; each registry is only touched on its own thread.
class SessionHomes {
 public:
  struct Home {
    boost::asio::io_context* io = nullptr;
    SessionRegistry sessions;
    // Connections on their way here: released by a worker's session, not yet registered.
    std::atomic<size_t> arriving{0};
  };

  explicit SessionHomes(const std::atomic<bool>& server_stopping) : stopping_(server_stopping) {}
  void add(boost::asio::io_context* io);  // once per thread; repeats are ignored
  Home* find(boost::asio::io_context* io) const;
  const std::vector<std::unique_ptr<Home>>& all() const { return homes_; }
  bool idle() const;  // no session on any home, and none on its way to one
  bool arrivals_pending() const;  // a session is on its way to some home
  bool server_stopping() const { return stopping_.load(); }
  // The hand-over pause in progress, if any: a session that starts (accepted, or arriving on
  // a home) while it lasts pauses at once. From any thread.
  void set_pause(std::shared_ptr<SessionPause> pause);
  std::shared_ptr<SessionPause> pause() const;

 private:
  const std::atomic<bool>& stopping_;
  std::vector<std::unique_ptr<Home>> homes_;
  mutable std::mutex pause_mutex_;
  std::shared_ptr<SessionPause> pause_;
};

}  // namespace volgate::nbd
