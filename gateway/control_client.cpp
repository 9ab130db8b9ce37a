#include "gateway/control_client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/untrusted_json.hpp"

namespace volgate::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using SecretBody = http::basic_string_body<char, std::char_traits<char>, WipingAllocator<char>>;

// Answers list every export: room for tens of thousands of them.
constexpr size_t kMaxAnswerBody = 64 * 1024 * 1024;

std::string export_path(const std::string& name) {
  // The names allowed need no percent-encoding in a path.
  if (!control::valid_export_name(name))
    throw std::invalid_argument("export name '" + name + "': 1-255 characters of letters, digits, '-', '_', '.', ':'");
  return "/v1/exports/" + name;
}

[[noreturn]] void refused(const std::string& method_target, int status, const control::Json& body) {
  auto message = control::error_message_from_json(body);
  throw GatewayControlError(status, method_target + ": " +
                                        (message ? *message : "the gateway answered HTTP " + std::to_string(status)));
}

}  // namespace

GatewayControlClient::GatewayControlClient(std::string socket_path, Timeouts timeouts)
    : socket_path_(std::move(socket_path)), timeouts_(timeouts) {
  if (socket_path_.empty()) throw std::invalid_argument("the gateway's control socket path is empty");
}

GatewayControlClient::Answer GatewayControlClient::call(const char* method, const std::string& target,
                                                        const control::Json* body,
                                                        std::chrono::milliseconds timeout) const {
  http::request<SecretBody> request;
  request.method_string(method);
  request.target(target);
  request.version(11);
  request.set(http::field::host, "localhost");
  request.set(http::field::user_agent, "volgate-controller");
  request.set(http::field::accept, "application/json");
  if (body) {
    request.set(http::field::content_type, "application/json");
    request.body() = body->dump();
  }
  request.keep_alive(false);
  request.prepare_payload();

  const std::string what = std::string(method) + " " + target;
  asio::io_context io;
  asio::local::stream_protocol::socket socket(io);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxAnswerBody);
  std::optional<error_code> outcome;
  // Each step runs only when the previous one succeeded; run_for() bounds them all together.
  socket.async_connect(asio::local::stream_protocol::endpoint(socket_path_), [&](error_code ec) {
    if (ec) return outcome.emplace(ec), void();
    http::async_write(socket, request, [&](error_code ec, size_t) {
      if (ec) return outcome.emplace(ec), void();
      http::async_read(socket, buffer, parser, [&](error_code ec, size_t) { outcome.emplace(ec); });
    });
  });
  io.run_for(timeout);
  if (!outcome)
    throw GatewayControlError(0, what + ": no answer from the gateway at " + socket_path_ + " within " +
                                     std::to_string(timeout.count() / 1000.0).substr(0, 4) + " s");
  if (*outcome)
    throw GatewayControlError(0, what + ": cannot talk to the gateway at " + socket_path_ + ": " + outcome->message());

  Answer answer;
  answer.status = static_cast<int>(parser.get().result_int());
  const std::string& text = parser.get().body();
  if (!text.empty()) {
    try {
      answer.body = parse_untrusted_json_as<control::Json>(text);
    } catch (const UntrustedJsonError&) {
      throw GatewayControlError(0, what + ": the gateway answered HTTP " + std::to_string(answer.status) +
                                       " with a body that is not JSON");
    }
  }
  return answer;
}

control::Health GatewayControlClient::health() const {
  Answer a = call("GET", "/v1/health", nullptr, timeouts_.call);
  if (a.status != 200) refused("GET /v1/health", a.status, a.body);
  try {
    return control::health_from_json(a.body);
  } catch (const control::ProtocolError& e) {
    throw GatewayControlError(0, std::string("GET /v1/health: unexpected answer: ") + e.what());
  }
}

std::vector<control::ExportInfo> GatewayControlClient::list_exports() const {
  Answer a = call("GET", "/v1/exports", nullptr, timeouts_.call);
  if (a.status != 200) refused("GET /v1/exports", a.status, a.body);
  try {
    auto list = a.body.is_object() ? a.body.find("exports") : a.body.end();
    if (list == a.body.end() || !list->is_array()) throw control::ProtocolError("no \"exports\" array");
    std::vector<control::ExportInfo> out;
    for (const auto& e : *list) out.push_back(control::export_from_json(e));
    return out;
  } catch (const control::ProtocolError& e) {
    throw GatewayControlError(0, std::string("GET /v1/exports: unexpected answer: ") + e.what());
  }
}

std::optional<control::ExportInfo> GatewayControlClient::get_export(const std::string& name) const {
  const std::string path = export_path(name);
  Answer a = call("GET", path, nullptr, timeouts_.call);
  if (a.status == 404) return std::nullopt;
  if (a.status != 200) refused("GET " + path, a.status, a.body);
  try {
    if (!a.body.is_object() || !a.body.contains("export")) throw control::ProtocolError("no \"export\" object");
    return control::export_from_json(a.body["export"]);
  } catch (const control::ProtocolError& e) {
    throw GatewayControlError(0, "GET " + path + ": unexpected answer: " + e.what());
  }
}

GatewayControlClient::PutResult GatewayControlClient::put_export(const std::string& name, const ExportSpec& target,
                                                                 bool read_only, const control::LuksKey* luks) const {
  const std::string path = export_path(name);
  control::Json body = control::put_request_to_json(target, read_only, luks);
  Answer a = call("PUT", path, &body, timeouts_.put);
  if (a.status != 200 && a.status != 201) refused("PUT " + path, a.status, a.body);
  try {
    if (!a.body.is_object() || !a.body.contains("export")) throw control::ProtocolError("no \"export\" object");
    return {a.status == 201, control::export_from_json(a.body["export"])};
  } catch (const control::ProtocolError& e) {
    throw GatewayControlError(0, "PUT " + path + ": unexpected answer: " + e.what());
  }
}

bool GatewayControlClient::delete_export(const std::string& name, bool force) const {
  const std::string path = export_path(name) + (force ? "?force=true" : "");
  Answer a = call("DELETE", path, nullptr, timeouts_.remove);
  if (a.status == 404) return false;
  if (a.status != 204) refused("DELETE " + path, a.status, a.body);
  return true;
}

}  // namespace volgate::gateway
