#include "controller/api/api_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <limits>
#include <optional>
#include <type_traits>

#include "controller/metrics/controller_metrics.hpp"

namespace volgate::controller {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

constexpr size_t kMaxBody = 1 << 20;
// The request line and headers: what Cinder's server takes on one header line.
constexpr uint32_t kMaxHeader = 16 * 1024;

template <class T>
struct IsTls : std::false_type {};
template <class T>
struct IsTls<asio::ssl::stream<T>> : std::true_type {};

// Who is at the other end, for log lines.
template <class Socket>
std::string peer_of(const Socket& socket) {
  if constexpr (std::is_same_v<typename Socket::protocol_type, asio::ip::tcp>) {
    error_code ec;
    auto endpoint = socket.remote_endpoint(ec);
    if (!ec) return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
    return "a TCP client";
  } else {
    return "a unix socket client";
  }
}

// One HTTP connection (over a socket, or over TLS on a socket: Stream). Its handlers run on a
// strand of their own, so the deadline timer and the stream's completions never run at once.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = IsTls<Stream>::value;

 public:
  Session(Stream stream, ApiServer& server, ApiServer::Door door)
      : socket_(std::move(stream)),
        server_(server),
        door_(door),
        deadline_(socket_.get_executor()),
        peer_(peer_of(beast::get_lowest_layer(socket_))) {}
  ~Session() { server_.connection_closed(door_); }

  void start() {
    if constexpr (kTls) handshake();
    else wait_for_request();
  }

 private:
  // Arms the deadline for the current phase; when it passes, the socket is closed and whatever
  // operation was pending completes with operation_aborted.
  void arm(std::chrono::milliseconds timeout, const char* phase) {
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = this->shared_from_this(), phase](error_code ec) {
      if (ec) return;  // re-armed or cancelled
      // A handshake cut off is worth a line (a client that cannot speak TLS, or one holding
      // connections); a keep-alive connection going quiet is not.
      if (!self->established_) spdlog::warn("API: {}: no TLS handshake within its time limit; connection closed", self->peer_);
      else spdlog::debug("API connection closed: no {} within its time limit", phase);
      error_code ignored;
      beast::get_lowest_layer(self->socket_).close(ignored);
    });
  }

  // HTTPS: the handshake first, within its own time limit. A failure (plain HTTP, garbage, an
  // untrusted client) is one line and the connection's end.
  void handshake() {
    established_ = false;
    arm(server_.limits().handshake, "TLS handshake");
    socket_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](error_code ec) {
      if (ec) {
        const bool timed_out = !beast::get_lowest_layer(self->socket_).is_open();
        self->deadline_.cancel();
        if (!timed_out) spdlog::warn("API: {}: TLS handshake failed: {}", self->peer_, ec.message());
        return;
      }
      self->established_ = true;
      self->wait_for_request();
    });
  }

  // Keep-alive: a quiet connection may wait `idle` for its next request, then `header` for
  // the header once the first byte is there, then `body`.
  void wait_for_request() {
    if (buffer_.size() > 0) return read_header();  // pipelined bytes already here
    arm(server_.limits().idle, "request");
    if constexpr (kTls) {
      // TLS may hold decrypted bytes the socket no longer shows as readable: read them.
      socket_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](error_code ec, size_t n) {
        if (ec) {
          self->deadline_.cancel();
          return;
        }
        self->buffer_.commit(n);
        self->read_header();
      });
    } else {
      socket_.async_wait(Stream::wait_read, [self = this->shared_from_this()](error_code ec) {
        if (ec) {
          self->deadline_.cancel();
          return;
        }
        self->read_header();
      });
    }
  }

  void read_header() {
    parser_.emplace();
    parser_->body_limit(kMaxBody);
    parser_->header_limit(kMaxHeader);
    arm(server_.limits().header, "request header");
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = this->shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->on_error(ec);
                              self->read_body();
                            });
  }

  void read_body() {
    arm(server_.limits().body, "request body");
    http::async_read(socket_, buffer_, *parser_, [self = this->shared_from_this()](error_code ec, size_t) {
      if (ec) return self->on_error(ec);
      self->on_request();
    });
  }

  void on_error(error_code ec) {
    // The connection is done: a pending deadline would keep this session (and its slot under
    // max_connections) alive until it fired.
    deadline_.cancel();
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
        ec == asio::ssl::error::stream_truncated)
      return;
    if (ec == http::error::body_limit) respond(error_response(413, "overLimit", "The request body is too large."), false);
    else if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
      respond(error_response(431, "badRequest", "The request's header is larger than " +
                                                    std::to_string(kMaxHeader / 1024) + " KiB."),
              false);
    else respond(error_response(400, "badRequest", "Malformed HTTP request: " + ec.message()), false);
  }

  // The answer may take long (an attach waits for its server's lock, then for libvirt): it is
  // worked out on a thread of its own (ApiServer::run_handler), so a request never waits for
  // another one to let go of an I/O thread, and no deadline runs meanwhile.
  void on_request() {
    deadline_.cancel();
    server_.run_handler([self = this->shared_from_this()] { self->handle_request(); },
                        [self = this->shared_from_this()] {
                          self->respond(error_response(503, "serviceUnavailable",
                                                       "The controller cannot take more requests now."),
                                        false);
                        });
  }

  // Off the strand: the strand starts nothing on this session until the answer is posted back,
  // so the parser's buffer (and the token in it) stays as it is.
  void handle_request() {
    const auto& request = parser_->get();
    auto view = [](beast::string_view v) { return std::string_view(v.data(), v.size()); };
    RequestHeaders headers{.api_version = std::string(view(request["OpenStack-API-Version"])),
                           .nova_api_version = std::string(view(request["X-OpenStack-Nova-API-Version"])),
                           .host = std::string(view(request[http::field::host])),
                           .if_match = std::string(view(request[http::field::if_match]))};
    // The token is compared where it lies in the parser's buffer: no copy of it to wipe.
    ApiResponse r = server_.handle(view(request.method_string()), view(request.target()),
                                   view(request["X-Auth-Token"]), request.body(), headers);
    asio::post(socket_.get_executor(),
               [self = this->shared_from_this(), r = std::move(r), keep_alive = request.keep_alive(),
                head = request.method() == http::verb::head] { self->respond(r, keep_alive, head); });
  }

  // `head`: the answer to a HEAD request, which has the headers of the answer but no body
  // (RFC 9110): bytes after them would be read as the start of the next answer.
  void respond(const ApiResponse& r, bool keep_alive, bool head = false) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(11);
    response->result(static_cast<http::status>(r.status));
    response->set(http::field::server, "volgate");
    if (!r.body.empty()) response->set(http::field::content_type, "application/json");
    for (const auto& [name, value] : r.headers) response->set(name, value);
    response->keep_alive(keep_alive);
    if (head) {
      response->content_length(r.body.size());
    } else {
      response->body() = r.body;
      response->prepare_payload();
    }
    arm(server_.limits().write, "reader for the answer");
    http::async_write(socket_, *response,
                      [self = this->shared_from_this(), response, keep_alive](error_code ec, size_t) {
                        if (!ec && keep_alive) return self->wait_for_request();
                        self->deadline_.cancel();
                        error_code ignored;
                        // Over TLS too only the TCP side is shut: the answer said where it ends,
                        // and waiting for the client's close_notify would hold the slot.
                        beast::get_lowest_layer(self->socket_).shutdown(asio::socket_base::shutdown_send, ignored);
                      });
  }

  Stream socket_;
  ApiServer& server_;
  const ApiServer::Door door_;
  asio::steady_timer deadline_;
  const std::string peer_;
  bool established_ = true;  // false while a TLS handshake runs
  beast::flat_buffer buffer_{kMaxHeader + 4096};  // a header, and bytes pipelined behind it
  std::optional<http::request_parser<http::string_body>> parser_;
};

// Log lines about refused or failed accepts: at most one a second, with a count.
class AcceptLog {
 public:
  void note(const char* what, const std::string& detail) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    ++count_;
    int64_t last = last_.load();
    if (now - last < std::chrono::nanoseconds(std::chrono::seconds(1)).count() ||
        !last_.compare_exchange_strong(last, now))
      return;
    spdlog::warn("API: {} ({}; {} time(s) since the last such line)", what, detail, count_.exchange(0));
  }

 private:
  std::atomic<int64_t> last_{std::numeric_limits<int64_t>::min() / 2};
  std::atomic<uint64_t> count_{0};
};

AcceptLog& accept_log() {
  static AcceptLog log;
  return log;
}

}  // namespace

// An HTTPS listener's TLS: the credentials' SSL_CTX, seen through the asio::ssl::context that
// asio's streams are made from.
struct ApiServer::TlsListener {
  explicit TlsListener(std::shared_ptr<const crypto::TlsServerCredentials> c) : credentials(std::move(c)) {
    SSL_CTX_up_ref(credentials->context());  // the asio context frees the reference it holds
    context.emplace(credentials->context());
  }
  TlsListener(const TlsListener&) = delete;
  TlsListener& operator=(const TlsListener&) = delete;

  std::shared_ptr<const crypto::TlsServerCredentials> credentials;
  std::optional<asio::ssl::context> context;
};

struct ApiServer::Listeners {
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> unix;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp;
  std::vector<std::unique_ptr<TlsListener>> tls;
};

ApiServer::ApiServer(VolumeApi& api, TokenTable tokens, unsigned threads, ApiServerLimits limits)
    : api_(api),
      tokens_(std::move(tokens)),
      threads_(threads),
      limits_(limits),
      listeners_(std::make_unique<Listeners>()) {}

bool ApiServer::admit_connection(Door door) {
  auto& open = connections_[static_cast<size_t>(door)];
  if (open.fetch_add(1) < limits_.max_connections) return true;
  open.fetch_sub(1);
  accept_log().note("connection refused", "already " + std::to_string(limits_.max_connections) + " open on " +
                                              (door == Door::local ? "the unix socket" : "TCP"));
  return false;
}

void ApiServer::connection_closed(Door door) { connections_[static_cast<size_t>(door)].fetch_sub(1); }

template <class Acceptor>
void ApiServer::accept_loop(Acceptor& acceptor, TlsListener* tls) {
  // Each connection gets a strand: its timer and socket handlers never run concurrently.
  acceptor.async_accept(asio::make_strand(io_), [this, &acceptor, tls](error_code ec, auto socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) return pause_accepting(acceptor, tls, ec);
    using Socket = typename Acceptor::protocol_type::socket;
    constexpr Door door =
        std::is_same_v<typename Acceptor::protocol_type, asio::ip::tcp> ? Door::network : Door::local;
    if (admit_connection(door)) {
      if (tls) {
        try {
          std::make_shared<Session<asio::ssl::stream<Socket>>>(asio::ssl::stream<Socket>(std::move(socket), *tls->context),
                                                               *this, door)->start();
        } catch (const std::exception& e) {  // OpenSSL could not make the connection's object
          connection_closed(door);
          accept_log().note("no TLS for a connection", e.what());
        }
      } else {
        std::make_shared<Session<Socket>>(std::move(socket), *this, door)->start();
      }
    }
    accept_loop(acceptor, tls);
  });
}

// Out of descriptors (or memory), every accept fails at once: retrying at once would spin a
// core and flood the log. Wait a moment; connections that close meanwhile free descriptors.
template <class Acceptor>
void ApiServer::pause_accepting(Acceptor& acceptor, TlsListener* tls, const error_code& ec) {
  accept_log().note("accept failed", ec.message());
  auto timer = std::make_shared<asio::steady_timer>(io_, limits_.accept_backoff);
  timer->async_wait([this, &acceptor, tls, timer](error_code wait_ec) {
    if (wait_ec || !acceptor.is_open()) return;
    accept_loop(acceptor, tls);
  });
}

ApiServer::~ApiServer() {
  wait_for_handlers();  // they use this object
  listeners_.reset();
  for (const auto& path : unix_paths_) ::unlink(path.c_str());
}

void ApiServer::listen_unix(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw std::runtime_error("unix socket " + path + ": the path exists and is not a socket");
    asio::local::stream_protocol::socket probe(io_);
    error_code ec;
    probe.connect(asio::local::stream_protocol::endpoint(path), ec);
    if (!ec) throw std::runtime_error("socket " + path + ": another process is listening on it");
    ::unlink(path.c_str());
  }
  auto acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
  acceptor->open();
  // The socket is born 0600: a umask set around bind() leaves no window in which another user
  // could connect before a chmod.
  mode_t old = ::umask(0177);
  error_code ec;
  acceptor->bind(asio::local::stream_protocol::endpoint(path), ec);
  ::umask(old);
  if (ec) throw std::runtime_error("socket " + path + ": " + ec.message());
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("socket " + path + ": " + ec.message());
  unix_paths_.push_back(path);
  accept_loop(*acceptor);
  listeners_->unix.push_back(std::move(acceptor));
}

uint16_t ApiServer::listen_tcp(const std::string& host_port,
                               std::shared_ptr<const crypto::TlsServerCredentials> tls) {
  if (tls && tls->uses_psk())
    throw std::runtime_error("tcp listen '" + host_port + "': HTTPS needs x509 certificates, not PSK");
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0) throw std::runtime_error("tcp listen '" + host_port + "': expected HOST:PORT");
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto port_text = std::string_view(host_port).substr(colon + 1);
  auto [end, perr] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (perr != std::errc() || end != port_text.data() + port_text.size() || port > 65535)
    throw std::runtime_error("tcp listen '" + host_port + "': port must be 0-65535");
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("tcp listen '" + host_port + "': not an IP address");
  auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(io_);
  asio::ip::tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor->open(endpoint.protocol());
  acceptor->set_option(asio::socket_base::reuse_address(true));
  acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("tcp listen '" + host_port + "': " + ec.message());
  uint16_t bound = acceptor->local_endpoint().port();
  TlsListener* tls_listener = nullptr;
  if (tls) {
    listeners_->tls.push_back(std::make_unique<TlsListener>(std::move(tls)));
    tls_listener = listeners_->tls.back().get();
  }
  accept_loop(*acceptor, tls_listener);
  listeners_->tcp.push_back(std::move(acceptor));
  return bound;
}

ApiResponse ApiServer::handle(std::string_view method, std::string_view target, std::string_view token,
                              const std::string& body, const RequestHeaders& headers) {
  const std::optional<Caller> caller = tokens_.find(token);
  if (!caller && !VolumeApi::open_to_anyone(method, target)) {
    spdlog::info("{} {}: 401 (no valid X-Auth-Token)", method, target);
    ControllerMetrics::process().api_request(method, "unauthenticated", 401);
    return error_response(401, "unauthorized", "The request needs a valid X-Auth-Token.");
  }
  RequestHeaders with_caller = headers;
  with_caller.caller = caller.value_or(Caller{});  // without a token: a member of no project
  ApiResponse r = api_.handle(std::string(method), std::string(target), body, with_caller);
  // Who asked (never the token): a refusal can be traced to the project whose token it was.
  if (caller)
    spdlog::info("{} {} ({} of {}): {}", method, target, to_string(caller->role), caller->project, r.status);
  else
    spdlog::info("{} {} (no token): {}", method, target, r.status);
  return r;
}

void ApiServer::run_handler(std::function<void()> handler, std::function<void()> refused) {
  {
    std::lock_guard lock(handlers_mutex_);
    ++handlers_running_;
  }
  // A thread per request, not a pool: a pool's threads would all end up waiting on one busy
  // server's lock with requests for other servers queued behind them. max_connections bounds
  // how many there are.
  try {
    std::thread([this, handler = std::move(handler)]() mutable {
      try {
        handler();
      } catch (const std::exception& e) {
        spdlog::error("API: a request's handler failed: {}", e.what());
      }
      handler = nullptr;  // what it holds (the session) goes while this server surely exists
      std::lock_guard lock(handlers_mutex_);
      if (--handlers_running_ == 0) handlers_done_.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    {
      std::lock_guard lock(handlers_mutex_);
      if (--handlers_running_ == 0) handlers_done_.notify_all();
    }
    accept_log().note("no thread for a request", e.what());
    refused();
  }
}

void ApiServer::wait_for_handlers() {
  std::unique_lock lock(handlers_mutex_);
  handlers_done_.wait(lock, [this] { return handlers_running_ == 0; });
}

void ApiServer::run() {
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < threads_; ++i) threads.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : threads) t.join();
  // Requests being handled finish (their answers go nowhere: the I/O has stopped), as they did
  // when they ran on the I/O threads: a flow is not cut in the middle.
  wait_for_handlers();
}

void ApiServer::stop() {
  asio::post(io_, [this] {
    error_code ignored;
    for (auto& a : listeners_->unix) a->close(ignored);
    for (auto& a : listeners_->tcp) a->close(ignored);
  });
  io_.stop();
}

}  // namespace volgate::controller
