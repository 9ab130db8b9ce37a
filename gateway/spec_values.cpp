#include "gateway/spec_values.hpp"

#include <charconv>
#include <stdexcept>

namespace volgate::gateway {
namespace {

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument(why); }

}  // namespace

bool parse_unsigned(std::string_view text, unsigned max, unsigned& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && out <= max;
}

std::string parse_host_port(std::string_view text, unsigned default_port, std::string_view what) {
  const std::string quoted = std::string(what) + " '" + std::string(text) + "'";
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) bad(quoted + ": missing ']'");
    host = text.substr(0, close + 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') bad(quoted + ": expected ':' after ']'");
      port = rest.substr(1);
      if (port.empty()) bad(quoted + ": empty port");
    }
    if (host.size() == 2) bad(quoted + ": empty host");
  } else {
    size_t colon = text.find(':');
    host = text.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = text.substr(colon + 1);
      if (port.empty()) bad(quoted + ": empty port");
    }
  }
  if (host.empty()) bad("empty " + std::string(what) + " (expected HOST[:PORT])");
  for (char c : host)
    if (c == '/' || c == '?' || c == '@' || c == ' ') bad(quoted + ": bad host");
  unsigned number = default_port;
  if (!port.empty() && (!parse_unsigned(port, 65535, number) || number == 0))
    bad(quoted + ": port must be a number 1-65535");
  return std::string(host) + ":" + std::to_string(number);
}

std::chrono::seconds parse_seconds(std::string_view key, std::string_view value, unsigned min) {
  unsigned seconds = 0;
  if (!parse_unsigned(value, kMaxSpecSeconds, seconds) || seconds < min)
    bad(std::string(key) + " '" + std::string(value) + "' must be a whole number of seconds, " +
        std::to_string(min) + "-" + std::to_string(kMaxSpecSeconds));
  return std::chrono::seconds(seconds);
}

}  // namespace volgate::gateway
