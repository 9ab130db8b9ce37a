#include "controller/pools/iscsi_name.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

namespace volgate::controller {
namespace {

constexpr size_t kMaxNameLength = 223;  // RFC 3720, 3.2.6.1
constexpr std::string_view kDefaultNamePrefix = "iqn.2026-11.org.volgate:host-";
constexpr std::string_view kHashLabel = "volgate iSCSI initiator name";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_name_char(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || c == '-' || c == '.' || c == ':'; }

std::string hex_name_problem(std::string_view name, std::string_view type, size_t digits, size_t alternative) {
  std::string_view hex = name.substr(type.size());
  bool all_hex = true;
  for (char c : hex) all_hex = all_hex && is_hex(c);
  if (all_hex && (hex.size() == digits || hex.size() == alternative)) return {};
  return std::string(type) + " must be followed by " + std::to_string(digits) +
         (alternative != digits ? " or " + std::to_string(alternative) : std::string()) + " hex digits";
}

}  // namespace

std::string iscsi_name_problem(std::string_view name) {
  if (name.size() > kMaxNameLength)
    return "longer than " + std::to_string(kMaxNameLength) + " bytes";
  if (name.starts_with("eui.")) return hex_name_problem(name, "eui.", 16, 16);
  if (name.starts_with("naa.")) return hex_name_problem(name, "naa.", 16, 32);
  if (!name.starts_with("iqn."))
    return "expected iqn.YYYY-MM.reversed.domain[:identifier], eui.HEX or naa.HEX";
  for (char c : name)
    if (!is_name_char(c)) return "only lowercase letters, digits, '-', '.' and ':' belong in an iqn. name";
  // iqn.YYYY-MM.
  std::string_view rest = name.substr(4);
  if (rest.size() < 8 || !is_digit(rest[0]) || !is_digit(rest[1]) || !is_digit(rest[2]) || !is_digit(rest[3]) ||
      rest[4] != '-' || !is_digit(rest[5]) || !is_digit(rest[6]) || rest[7] != '.')
    return "expected the year and month the naming authority owned its domain after iqn. (iqn.YYYY-MM.)";
  int month = (rest[5] - '0') * 10 + (rest[6] - '0');
  if (month < 1 || month > 12) return "the month after iqn.YYYY- must be 01-12";
  rest = rest.substr(8);
  // The naming authority, a reversed domain name, up to the first ':'.
  std::string_view authority = rest.substr(0, rest.find(':'));
  if (authority.empty()) return "no naming authority (a reversed domain name) after iqn.YYYY-MM.";
  size_t label_start = 0;
  for (size_t i = 0; i <= authority.size(); ++i) {
    if (i < authority.size() && authority[i] != '.') continue;
    std::string_view label = authority.substr(label_start, i - label_start);
    if (label.empty() || label.front() == '-' || label.back() == '-')
      return "the naming authority '" + std::string(authority) + "' is not a reversed domain name";
    label_start = i + 1;
  }
  if (authority.size() < rest.size() && authority.size() + 1 == rest.size())
    return "nothing after the ':' that begins the identifier";
  return {};
}

std::string initiator_name_for_host(std::string_view host_identity) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  if (!HMAC(EVP_sha256(), host_identity.data(), static_cast<int>(host_identity.size()),
            reinterpret_cast<const unsigned char*>(kHashLabel.data()), kHashLabel.size(), digest, &digest_length))
    throw std::runtime_error("cannot derive this host's iSCSI initiator name (HMAC-SHA256 failed)");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name(kDefaultNamePrefix);
  for (size_t i = 0; i < 8; ++i) {
    name += kHex[digest[i] >> 4];
    name += kHex[digest[i] & 0xf];
  }
  return name;
}

std::string default_initiator_name() {
  std::string identity;
  std::ifstream machine_id("/etc/machine-id");
  std::getline(machine_id, identity);
  if (identity.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
      throw std::runtime_error("this host has neither /etc/machine-id nor a host name to derive its iSCSI "
                               "initiator name from: set initiator_name");
    identity = host;
  }
  return initiator_name_for_host(identity);
}

}  // namespace volgate::controller
