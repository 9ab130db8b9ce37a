#include "gateway/control_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <optional>

namespace volgate::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using unix_socket = asio::local::stream_protocol::socket;
using SecretBody = http::basic_string_body<char, std::char_traits<char>, WipingAllocator<char>>;

// Room for the request line and headers; the body streams through it in pieces.
constexpr size_t kReadBuffer = 16 * 1024;

// Only the user the gateway runs as, and root, may change what it serves.
bool peer_allowed(unix_socket& socket, uid_t& uid) {
  ucred cred{};
  socklen_t length = sizeof cred;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return false;
  uid = cred.uid;
  return cred.uid == 0 || cred.uid == ::geteuid();
}

}  // namespace

// One connection, keep-alive, its requests one after the other. Everything of it runs on the
// server's one thread.
class ControlServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(unix_socket socket, ControlServer& server)
      : socket_(std::move(socket)), server_(server), deadline_(socket_.get_executor()) {}
  ~Connection() { server_.closed(); }

  void start() {
    uid_t uid = 0;
    allowed_ = peer_allowed(socket_, uid);
    if (!allowed_) spdlog::warn("control: refusing a connection from uid {}", uid);
    wait_for_request();
  }

 private:
  void arm(std::chrono::milliseconds timeout, const char* phase) {
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = shared_from_this(), phase](error_code ec) {
      if (ec) return;  // re-armed or cancelled
      spdlog::debug("control: connection closed: no {} in time", phase);
      error_code ignored;
      self->socket_.close(ignored);
    });
  }

  void wait_for_request() {
    if (buffer_.size() > 0) return read_header();  // pipelined bytes already here
    arm(server_.limits_.idle, "request");
    socket_.async_wait(unix_socket::wait_read, [self = shared_from_this()](error_code ec) {
      if (ec) return self->finish();
      self->read_header();
    });
  }

  void read_header() {
    parser_.emplace();
    parser_->body_limit(control::kMaxRequestBody);
    arm(server_.limits_.header, "request header");
    http::async_read_header(socket_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->on_error(ec);
      self->read_body();
    });
  }

  void read_body() {
    arm(server_.limits_.body, "request body");
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->on_error(ec);
      self->on_request();
    });
  }

  void on_error(error_code ec) {
    forget_request();
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor)
      return finish();
    if (ec == http::error::body_limit)
      respond({413, error_text(413, "the request body is larger than 64 KiB")}, false);
    else
      respond({400, error_text(400, "malformed HTTP request: " + ec.message())}, false);
  }

  static std::string error_text(int status, const std::string& message) {
    WipingString text = control::to_text(control::error_to_json(status, message));
    return std::string(text.data(), text.size());
  }

  void on_request() {
    auto& request = parser_->get();
    const std::string method(request.method_string());
    const std::string target(request.target());
    const bool keep_alive = request.keep_alive();
    ControlResponse response;
    if (allowed_ && target == "/v1/handover" && server_.handover_.run) {
      if (method != "POST") {
        response = {405, error_text(405, "/v1/handover takes POST")};
      } else if (auto refused = server_.handover_.refuse(request.body())) {
        response = std::move(*refused);
      } else {
        forget_request();
        return hand_over();
      }
      forget_request();
      spdlog::info("control: {} {}: {}", method, target, response.status);
      return respond(std::move(response), false);
    }
    if (!allowed_) {
      response = {403, error_text(403, "only the user the gateway runs as, or root, may use its control socket")};
    } else {
      try {
        response = server_.service_.handle(method, target, request.body());
      } catch (const std::exception& e) {
        spdlog::error("control: {} {}: {}", method, target, e.what());
        response = {500, error_text(500, "internal error; see the gateway's log")};
      }
    }
    forget_request();
    // The controller asks for health twice a second: reads that worked are debug, so that the
    // log shows the changes.
    const auto level = method == "GET" && response.status < 400 ? spdlog::level::debug : spdlog::level::info;
    spdlog::log(level, "control: {} {}: {}", method, target, response.status);
    respond(std::move(response), keep_alive && allowed_);
  }

  // The request may have carried a key: its body goes (its allocator wipes it), and so does
  // every byte the read buffer held.
  void forget_request() {
    parser_.reset();
    WipingBuffer pending;
    if (buffer_.size() > 0) {  // a pipelined next request: keep it, in a fresh buffer
      auto bytes = buffer_.data();
      asio::buffer_copy(pending.prepare(bytes.size()), bytes);
      pending.commit(bytes.size());
    }
    buffer_ = std::move(pending);  // the old storage is freed, and so wiped
  }

  void respond(ControlResponse r, bool keep_alive) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(11);
    response->result(static_cast<http::status>(r.status));
    response->set(http::field::server, "volgate-gateway");
    if (!r.body.empty()) response->set(http::field::content_type, "application/json");
    response->body() = std::move(r.body);
    response->keep_alive(keep_alive);
    response->prepare_payload();
    arm(server_.limits_.write, "reader for the answer");
    http::async_write(socket_, *response, [self = shared_from_this(), response, keep_alive](error_code ec, size_t) {
      if (!ec && keep_alive) return self->wait_for_request();
      self->finish();
    });
  }

  // The connection stops being HTTP: answered 101 here, it goes to the hand-over as a bare
  // socket, on this thread (see HandoverHandler).
  void hand_over() {
    deadline_.cancel();
    static constexpr std::string_view kSwitching =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: volgate-handover\r\n\r\n";
    error_code ec;
    socket_.non_blocking(false, ec);
    if (!ec) asio::write(socket_, asio::buffer(kSwitching), ec);
    if (ec || buffer_.size() > 0) {  // nothing may follow the request before our answer
      spdlog::warn("control: hand-over request dropped: {}", ec ? ec.message() : "bytes after the request");
      return finish();
    }
    const int fd = socket_.release(ec);
    if (ec) return finish();
    server_.handover_.run(UniqueFd(fd));
  }

  // The end of the connection: the deadline, which holds it alive, goes too, so the
  // connection no longer counts against the limit.
  void finish() {
    deadline_.cancel();
    error_code ignored;
    socket_.shutdown(unix_socket::shutdown_send, ignored);
    socket_.close(ignored);
  }

  using WipingBuffer = beast::basic_flat_buffer<WipingAllocator<char>>;

  unix_socket socket_;
  ControlServer& server_;
  asio::steady_timer deadline_;
  WipingBuffer buffer_{kReadBuffer};
  std::optional<http::request_parser<SecretBody>> parser_;
  bool allowed_ = false;
};

ControlServer::ControlServer(ControlService& service, ControlServerLimits limits)
    : service_(service), limits_(limits) {}

ControlServer::~ControlServer() { shutdown(); }

void ControlServer::listen(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    throw std::runtime_error("--control " + path + ": the path is too long for a unix socket");
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw std::runtime_error("--control " + path + ": the path exists and is not a socket");
    unix_socket probe(io_);
    error_code ec;
    probe.connect(asio::local::stream_protocol::endpoint(path), ec);
    if (!ec) throw std::runtime_error("--control " + path + ": another gateway is listening on it");
    ::unlink(path.c_str());  // left behind by a gateway that died
  }
  error_code ec;
  acceptor_.open(asio::local::stream_protocol(), ec);
  // Born 0600: a umask around bind() leaves no moment in which another user could connect.
  mode_t old = ::umask(0177);
  if (!ec) acceptor_.bind(asio::local::stream_protocol::endpoint(path), ec);
  ::umask(old);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("--control " + path + ": " + ec.message());
  path_ = path;
}

void ControlServer::adopt(UniqueFd listening) {
  sockaddr_un address{};
  socklen_t length = sizeof address;
  int listening_flag = 0;
  socklen_t flag_length = sizeof listening_flag;
  if (::getsockname(listening.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      address.sun_family != AF_UNIX ||
      ::getsockopt(listening.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening_flag, &flag_length) != 0 ||
      !listening_flag)
    throw std::runtime_error("the handed-over control socket is not a listening unix socket");
  error_code ec;
  acceptor_.assign(asio::local::stream_protocol(), listening.get(), ec);
  if (ec) throw std::runtime_error("the handed-over control socket: " + ec.message());
  path_.assign(address.sun_path, ::strnlen(address.sun_path, sizeof address.sun_path));
  (void)listening.release();
}

void ControlServer::start() {
  accept_next();
  thread_ = std::thread([this] { io_.run(); });
}

bool ControlServer::admit() {
  if (connections_.fetch_add(1) < limits_.max_connections) return true;
  connections_.fetch_sub(1);
  if (const uint64_t events = refused_log_.count())
    spdlog::warn("control: connection refused, already {} open ({} time(s) since the last such line)",
                 limits_.max_connections, events);
  return false;
}

void ControlServer::accept_next() {
  acceptor_.async_accept([this](error_code ec, unix_socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors: every accept would fail at once; pause instead of spinning.
      if (const uint64_t events = accept_failed_log_.count())
        spdlog::warn("control: accept failed: {} ({} time(s) since the last such line)", ec.message(), events);
      auto timer = std::make_shared<asio::steady_timer>(io_, limits_.accept_backoff);
      timer->async_wait([this, timer](error_code wait_ec) {
        if (!wait_ec && acceptor_.is_open()) accept_next();
      });
      return;
    }
    if (admit()) std::make_shared<Connection>(std::move(socket), *this)->start();
    accept_next();
  });
}

void ControlServer::stop() {
  asio::post(io_, [this] {
    if (!acceptor_.is_open()) return;
    error_code ignored;
    acceptor_.close(ignored);
    if (path_.empty()) return spdlog::info("control: socket handed over");
    ::unlink(path_.c_str());
    spdlog::info("control: socket {} closed", path_);
  });
}

void ControlServer::shutdown() {
  if (!thread_.joinable()) {
    if (!path_.empty() && acceptor_.is_open()) ::unlink(path_.c_str());
    return;
  }
  stop();
  // Let the close above run, then end: handlers of open connections are dropped unrun.
  asio::post(io_, [this] { io_.stop(); });
  thread_.join();
}

}  // namespace volgate::gateway
