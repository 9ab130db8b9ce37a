#include "controller/api_server.hpp"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <optional>

namespace volgate::controller {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

constexpr size_t kMaxBody = 1 << 20;

template <class Socket>
class Session : public std::enable_shared_from_this<Session<Socket>> {
 public:
  Session(Socket socket, ApiServer& server) : socket_(std::move(socket)), server_(server) {}

  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(kMaxBody);
    http::async_read(socket_, buffer_, *parser_,
                     [self = this->shared_from_this()](error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) return;
    if (ec) {
      if (ec == http::error::body_limit) respond(error_response(413, "overLimit", "The request body is too large."), false);
      else if (ec != asio::error::operation_aborted)
        respond(error_response(400, "badRequest", "Malformed HTTP request: " + ec.message()), false);
      return;
    }
    auto request = parser_->release();
    std::string token(request["X-Auth-Token"]);
    ApiResponse r = server_.handle(std::string(request.method_string()), std::string(request.target()), token,
                                   request.body());
    respond(r, request.keep_alive());
  }

  void respond(const ApiResponse& r, bool keep_alive) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(11);
    response->result(static_cast<http::status>(r.status));
    response->set(http::field::server, "volgate");
    if (!r.body.empty()) response->set(http::field::content_type, "application/json");
    response->body() = r.body;
    response->keep_alive(keep_alive);
    response->prepare_payload();
    http::async_write(socket_, *response,
                      [self = this->shared_from_this(), response, keep_alive](error_code ec, size_t) {
                        if (!ec && keep_alive) self->read();
                        else {
                          error_code ignored;
                          self->socket_.shutdown(Socket::shutdown_send, ignored);
                        }
                      });
  }

  Socket socket_;
  ApiServer& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

template <class Acceptor>
void accept_loop(Acceptor& acceptor, ApiServer& server) {
  acceptor.async_accept([&acceptor, &server](error_code ec, typename Acceptor::protocol_type::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Session<typename Acceptor::protocol_type::socket>>(std::move(socket), server)->start();
    accept_loop(acceptor, server);
  });
}

}  // namespace

struct ApiServer::Listeners {
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> unix;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp;
};

ApiServer::ApiServer(VolumeApi& api, std::string token, unsigned threads)
    : api_(api), token_(std::move(token)), threads_(threads), listeners_(std::make_unique<Listeners>()) {}

ApiServer::~ApiServer() {
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
  accept_loop(*acceptor, *this);
  listeners_->unix.push_back(std::move(acceptor));
}

uint16_t ApiServer::listen_tcp(const std::string& host_port) {
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
  accept_loop(*acceptor, *this);
  listeners_->tcp.push_back(std::move(acceptor));
  return bound;
}

ApiResponse ApiServer::handle(const std::string& method, const std::string& target, const std::string& token,
                              const std::string& body) {
  if (token.size() != token_.size() || CRYPTO_memcmp(token.data(), token_.data(), token_.size()) != 0) {
    spdlog::info("{} {}: 401 (no valid X-Auth-Token)", method, target);
    return error_response(401, "unauthorized", "The request needs a valid X-Auth-Token.");
  }
  ApiResponse r = api_.handle(method, target, body);
  spdlog::info("{} {}: {}", method, target, r.status);
  return r;
}

void ApiServer::run() {
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < threads_; ++i) threads.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : threads) t.join();
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
