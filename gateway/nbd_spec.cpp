#include "gateway/nbd_spec.hpp"

#include <stdexcept>
#include <string>

#include "gateway/spec_values.hpp"

namespace volgate::gateway {
namespace {

constexpr std::string_view kTcpScheme = "nbd://";
constexpr std::string_view kUnixScheme = "nbd+unix://";
constexpr unsigned kDefaultPort = 10809;
constexpr unsigned kMaxConnections = 16;
constexpr size_t kMaxExportName = 4096;  // the NBD protocol's limit on names

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument(why); }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX escapes decoded; `what` names the part in errors.
std::string percent_decode(std::string_view text, std::string_view what) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int high = i + 2 < text.size() ? hex_digit(text[i + 1]) : -1;
    const int low = i + 2 < text.size() ? hex_digit(text[i + 2]) : -1;
    if (high < 0 || low < 0 || (high == 0 && low == 0))
      bad(std::string(what) + " '" + std::string(text) + "': bad %-escape (expected %XX, not %00)");
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

std::string export_from_path(std::string_view path) {
  // The path is "/EXPORT" or empty (the server's default export).
  std::string_view name = path.empty() ? path : path.substr(1);
  std::string decoded = percent_decode(name, "export name");
  if (decoded.size() > kMaxExportName)
    bad("export name longer than " + std::to_string(kMaxExportName) + " bytes");
  return decoded;
}

}  // namespace

bool is_nbd_uri(std::string_view backend) {
  return backend.starts_with("nbd://") || backend.starts_with("nbd+") || backend.starts_with("nbds://") ||
         backend.starts_with("nbds+");
}

backends::NbdOptions parse_nbd_uri(std::string_view uri) {
  backends::NbdOptions options;
  options.uri = std::string(uri);
  // nbds:// and nbds+unix:// are the same URIs with TLS required.
  std::string plain;
  if (uri.starts_with("nbds://") || uri.starts_with("nbds+unix://")) {
    options.tls = true;
    plain = "nbd" + std::string(uri.substr(4));
    uri = plain;
  }
  if (uri.starts_with(kUnixScheme)) {
    std::string_view rest = uri.substr(kUnixScheme.size());
    if (!rest.starts_with('/') && !rest.starts_with('?') && !rest.empty())
      bad("nbd+unix:// takes no host (expected nbd+unix:///EXPORT?socket=PATH)");
    size_t question = rest.find('?');
    options.export_name = export_from_path(rest.substr(0, question));
    if (question == std::string_view::npos) bad("nbd+unix:// needs ?socket=PATH");
    std::string_view query = rest.substr(question + 1);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      size_t eq = pair.find('=');
      std::string_view key = pair.substr(0, eq);
      if (key != "socket" || eq == std::string_view::npos)
        bad("unknown query parameter '" + std::string(pair) + "' (nbd+unix:// takes socket=PATH)");
      if (!options.socket.empty()) bad("socket= is given twice");
      options.socket = percent_decode(pair.substr(eq + 1), "socket path");
      if (options.socket.empty()) bad("socket= needs a path");
      if (amp == std::string_view::npos) break;
      query = query.substr(amp + 1);
    }
    if (options.socket.empty()) bad("nbd+unix:// needs ?socket=PATH");
    return options;
  }
  if (uri.starts_with(kTcpScheme)) {
    std::string_view rest = uri.substr(kTcpScheme.size());
    size_t end = rest.find_first_of("/?");
    if (end != std::string_view::npos && rest[end] == '?')
      bad("nbd:// takes no query (expected nbd://HOST[:PORT]/EXPORT)");
    std::string host_port = parse_host_port(rest.substr(0, end), kDefaultPort, "host");
    size_t colon = host_port.rfind(':');
    options.host = host_port.substr(0, colon);
    parse_unsigned(std::string_view(host_port).substr(colon + 1), 65535, options.port);
    if (end != std::string_view::npos) {
      std::string_view path = rest.substr(end);
      if (path.find('?') != std::string_view::npos)
        bad("nbd:// takes no query (expected nbd://HOST[:PORT]/EXPORT)");
      options.export_name = export_from_path(path);
    }
    return options;
  }
  bad("unsupported NBD URI scheme (expected nbd[s]://HOST[:PORT]/EXPORT or "
      "nbd[s]+unix:///EXPORT?socket=PATH)");
}

bool apply_nbd_option(backends::NbdOptions& options, std::string_view key, std::string_view value,
                      bool has_value) {
  if (!has_value) return false;
  if (key == "reconnect-delay") {
    options.reconnect_delay = parse_seconds(key, value, 0);
  } else if (key == "connect-timeout") {
    options.connect_timeout = parse_seconds(key, value, 1);
  } else if (key == "tls-certificates" || key == "tls-psk-file" || key == "tls-username") {
    if (!options.tls) bad(std::string(key) + "= needs TLS to the upstream: an nbds:// or nbds+unix:// URI");
    if (value.empty()) bad(std::string(key) + "= needs a value");
    (key == "tls-certificates" ? options.tls_certificates
     : key == "tls-psk-file"   ? options.tls_psk_file
                               : options.tls_username) = std::string(value);
  } else if (key == "connections") {
    if (!parse_unsigned(value, kMaxConnections, options.connections) || options.connections == 0)
      bad("connections '" + std::string(value) + "' must be a number 1-" + std::to_string(kMaxConnections));
  } else {
    return false;
  }
  return true;
}

}  // namespace volgate::gateway
