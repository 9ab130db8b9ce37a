#include "common/metrics_http_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <optional>
#include <stdexcept>
#include <system_error>

namespace volgate {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

tcp::endpoint parse_metrics_address(const std::string& text, const std::string& option) {
  std::string host = "127.0.0.1";
  std::string_view port_text = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos) {
    host = text.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    port_text = std::string_view(text).substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535)
    throw std::invalid_argument(option + " '" + text + "': expected [HOST:]PORT with a port 0-65535");
  error_code bad;
  auto address = asio::ip::make_address(host, bad);
  if (bad) throw std::invalid_argument(option + " '" + text + "': '" + host + "' is not an IP address");
  return {address, static_cast<uint16_t>(port)};
}

// One client connection: requests one after the other (keep-alive), each under a deadline.
class MetricsHttpServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, MetricsHttpServer& server, std::shared_ptr<size_t> open)
      : stream_(std::move(socket)), server_(server), open_(std::move(open)) {
    ++*open_;
  }
  ~Connection() { --*open_; }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_.limits_.max_header_bytes));
    parser_->body_limit(0);  // a scrape carries no body
    // A keep-alive connection between scrapes may idle longer than a request may take; a new
    // connection, or one with bytes of its next request already here, may not.
    stream_.expires_after(answered_ && buffer_.size() == 0 ? server_.limits_.idle_timeout
                                                           : server_.limits_.request_timeout);
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->on_error(ec);
      self->stream_.expires_after(self->server_.limits_.request_timeout);
      http::async_read(self->stream_, self->buffer_, *self->parser_, [self](error_code e, size_t) {
        if (e) return self->on_error(e);
        self->on_request();
      });
    });
  }

 private:
  void on_error(error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted || ec == beast::error::timeout)
      return close();
    // The read buffer's bound (twice the header limit) only trips on headers past the limit.
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
      return respond(http::status::request_header_fields_too_large, "request headers too large\n", false, false);
    if (ec == http::error::body_limit)
      return respond(http::status::payload_too_large, "a scrape request has no body\n", false, false);
    respond(http::status::bad_request, "malformed HTTP request: " + ec.message() + "\n", false, false);
  }

  void on_request() {
    const auto& request = parser_->get();
    const bool keep_alive = request.keep_alive();
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    const bool head = request.method() == http::verb::head;
    if (path != "/metrics") return respond(http::status::not_found, "only /metrics is here\n", keep_alive, head);
    if (request.method() != http::verb::get && !head)
      return respond(http::status::method_not_allowed, "GET or HEAD only\n", keep_alive, false);
    std::string body;
    try {
      body = server_.collect_();
    } catch (const std::exception& e) {
      spdlog::error("metrics: collecting failed: {}", e.what());
      return respond(http::status::internal_server_error, "collecting the metrics failed\n", false, false);
    }
    respond(http::status::ok, std::move(body), keep_alive, head, kContentType);
  }

  void respond(http::status status, std::string body, bool keep_alive, bool head,
               const char* type = "text/plain; charset=utf-8") {
    auto response = std::make_shared<http::response<http::string_body>>(status, 11);
    response->set(http::field::server, "volgate");
    response->set(http::field::content_type, type);
    if (status == http::status::method_not_allowed) response->set(http::field::allow, "GET, HEAD");
    response->keep_alive(keep_alive);
    response->body() = std::move(body);
    response->prepare_payload();
    if (head) response->body().clear();  // the length stays that of the GET answer
    parser_.reset();
    stream_.expires_after(server_.limits_.write_timeout);
    answered_ = true;
    auto write_done = [self = shared_from_this(), response, keep_alive](error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->read_request();
    };
    if (head) {
      auto serializer = std::make_shared<http::response_serializer<http::string_body>>(*response);
      http::async_write_header(stream_, *serializer,
                               [serializer, write_done](error_code ec, size_t n) { write_done(ec, n); });
    } else {
      http::async_write(stream_, *response, std::move(write_done));
    }
  }

  void close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  MetricsHttpServer& server_;
  std::shared_ptr<size_t> open_;
  beast::flat_buffer buffer_{2 * server_.limits_.max_header_bytes};  // its most, not its start
  std::optional<http::request_parser<http::string_body>> parser_;
  bool answered_ = false;  // a request was answered: the connection is a keep-alive one
};

MetricsHttpServer::MetricsHttpServer(const tcp::endpoint& endpoint, Collect collect, MetricsServerLimits limits)
    : acceptor_(io_), collect_(std::move(collect)), limits_(limits), open_(std::make_shared<size_t>(0)) {
  error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::system_error(ec.value(), std::generic_category(),
                            "metrics: listening on " + endpoint.address().to_string() + ":" +
                                std::to_string(endpoint.port()));
  describe_bound_address();
  if (!endpoint.address().is_loopback())
    spdlog::warn("metrics on {}, which is not a loopback address: anyone who can reach it sees the "
                 "export names and their traffic",
                 address());
}

MetricsHttpServer::MetricsHttpServer(int listening_fd, Collect collect, MetricsServerLimits limits)
    : acceptor_(io_), collect_(std::move(collect)), limits_(limits), open_(std::make_shared<size_t>(0)) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(listening_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      (address.ss_family != AF_INET && address.ss_family != AF_INET6)) {
    ::close(listening_fd);
    throw std::system_error(EINVAL, std::generic_category(), "metrics: the handed-over socket is not a TCP one");
  }
  error_code ec;
  acceptor_.assign(address.ss_family == AF_INET ? tcp::v4() : tcp::v6(), listening_fd, ec);
  if (ec) {
    ::close(listening_fd);
    throw std::system_error(ec.value(), std::generic_category(), "metrics: the handed-over socket");
  }
  describe_bound_address();
}

void MetricsHttpServer::describe_bound_address() {
  // Read once, here: the acceptor is the server thread's from start() on.
  error_code ec;
  const tcp::endpoint bound = acceptor_.local_endpoint(ec);
  port_ = bound.port();
  address_ = (bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string()) +
             ":" + std::to_string(port_);
}

MetricsHttpServer::~MetricsHttpServer() { stop(); }

void MetricsHttpServer::start() {
  accept_next();
  thread_ = std::thread([this] { io_.run(); });
}

void MetricsHttpServer::stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
  });
  io_.stop();  // connections still open are dropped with the io_context
  thread_.join();
}

void MetricsHttpServer::accept_next() {
  acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      if (*open_ >= limits_.max_connections) {
        spdlog::debug("metrics: {} connections are open, closing a new one", *open_);
        error_code ignored;
        socket.close(ignored);
      } else {
        std::make_shared<Connection>(std::move(socket), *this, open_)->read_request();
      }
    } else if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
      // Out of descriptors: the NBD connections matter more; try again in a while.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      return timer->async_wait([this, timer](error_code) { accept_next(); });
    }
    accept_next();
  });
}

}  // namespace volgate
