#include "controller/api/api_client.hpp"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>

namespace volgate::controller {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

template <class Socket>
ClientResponse exchange(Socket& socket, http::request<http::string_body>& request) {
  http::write(socket, request);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(socket, buffer, parser);
  auto response = parser.release();
  ClientResponse out;
  out.status = static_cast<int>(response.result_int());
  if (!response.body().empty()) {
    out.body = nlohmann::json::parse(response.body(), nullptr, false);
    if (out.body.is_discarded())
      throw std::runtime_error("the controller answered HTTP " + std::to_string(out.status) + " with a body that is not JSON");
  }
  return out;
}

// The server's certificate must chain to `cacert` (or the system's CAs)...
void trust(asio::ssl::context& context, const std::string& cacert) {
  SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
  context.set_verify_mode(asio::ssl::verify_peer);
  error_code ec;
  if (cacert.empty()) context.set_default_verify_paths(ec);
  else context.load_verify_file(cacert, ec);
  if (ec) throw std::runtime_error("CA file " + (cacert.empty() ? std::string("(system)") : cacert) + ": " + ec.message());
}

// ... and name `host`: its DNS name, or its IP address when the URL gives one.
void verify_name(SSL* ssl, const std::string& host) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  error_code not_ip;
  asio::ip::make_address(host, not_ip);
  if (!not_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) throw std::runtime_error("TLS: cannot check IP " + host);
  } else {
    if (X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) != 1 ||
        SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
      throw std::runtime_error("TLS: cannot check host name " + host);
  }
}

}  // namespace

ApiClient::ApiClient(const std::string& url, std::string token, std::string cacert)
    : url_(url), token_(std::move(token)), cacert_(std::move(cacert)) {
  if (url.starts_with("unix:")) {
    unix_path_ = url.substr(5);
    if (unix_path_.empty()) throw std::invalid_argument("URL '" + url + "': unix: needs a socket path");
  } else if (url.starts_with("http://") || url.starts_with("https://")) {
    tls_ = url.starts_with("https://");
    std::string rest = url.substr(tls_ ? 8 : 7);
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size() || rest.find('/') != std::string::npos)
      throw std::invalid_argument("URL '" + url + "': expected " + (tls_ ? "https" : "http") + "://HOST:PORT");
    host_ = rest.substr(0, colon);
    port_ = rest.substr(colon + 1);
    if (host_.size() > 2 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
  } else {
    throw std::invalid_argument("URL '" + url + "': expected unix:PATH, http://HOST:PORT or https://HOST:PORT");
  }
}

ApiClient::~ApiClient() { OPENSSL_cleanse(token_.data(), token_.size()); }

ClientResponse ApiClient::request(const std::string& method, const std::string& target,
                                  const std::optional<nlohmann::json>& body) const {
  http::request<http::string_body> request;
  request.method_string(method);
  request.target(target);
  request.version(11);
  request.set(http::field::host, host_.empty() ? "localhost" : host_);
  request.set(http::field::user_agent, "volgate-cli");
  request.set(http::field::accept, "application/json");
  request.set("X-Auth-Token", token_);
  if (!api_version_.empty()) request.set("OpenStack-API-Version", api_version_);
  if (body) {
    request.set(http::field::content_type, "application/json");
    try {
      request.body() = body->dump();
    } catch (const nlohmann::json::type_error&) {  // JSON strings must be UTF-8; paths need not be
      throw std::runtime_error("an argument is not valid UTF-8, which the volume API (JSON) cannot carry");
    }
  }
  request.keep_alive(false);
  request.prepare_payload();
  asio::io_context io;
  try {
    if (!unix_path_.empty()) {
      asio::local::stream_protocol::socket socket(io);
      socket.connect(asio::local::stream_protocol::endpoint(unix_path_));
      return exchange(socket, request);
    }
    asio::ip::tcp::resolver resolver(io);
    if (tls_) {
      asio::ssl::context context(asio::ssl::context::tls_client);
      trust(context, cacert_);  // before the stream: it takes the context's settings when made
      asio::ssl::stream<asio::ip::tcp::socket> stream(io, context);
      verify_name(stream.native_handle(), host_);
      asio::connect(stream.lowest_layer(), resolver.resolve(host_, port_));
      error_code ec;
      stream.handshake(asio::ssl::stream_base::client, ec);
      if (ec) {
        const long verdict = SSL_get_verify_result(stream.native_handle());
        std::string why = ec.message();
        if (verdict != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(verdict) + ")";
        throw std::runtime_error("cannot talk to the controller at " + url_ + ": TLS: " + why);
      }
      return exchange(stream, request);
    }
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, resolver.resolve(host_, port_));
    return exchange(socket, request);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot talk to the controller at " + url_ + ": " + e.code().message());
  }
}

std::string ApiClient::error_message(const ClientResponse& response) {
  if (response.body.is_object() && response.body.size() == 1) {
    const auto& fault = response.body.begin().value();
    if (fault.is_object() && fault.contains("message") && fault["message"].is_string())
      return fault["message"].get<std::string>();
  }
  return "the controller answered HTTP " + std::to_string(response.status);
}

}  // namespace volgate::controller
