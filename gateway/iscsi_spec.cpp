#include "gateway/iscsi_spec.hpp"

#include "gateway/spec_values.hpp"

#include <charconv>
#include <stdexcept>
#include <string>

namespace volgate::gateway {
namespace {

constexpr unsigned kDefaultPort = 3260;
constexpr unsigned kMaxLun = 16383;                 // the flat LUN space (SAM)

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument(why); }

}  // namespace

size_t iscsi_backend_length(std::string_view text) {
  size_t slash = text.find('/', kIscsiScheme.size());
  if (slash == std::string_view::npos) return text.size();  // malformed: parse_iscsi_uri says why
  size_t comma = text.find(',', slash);
  return comma == std::string_view::npos ? text.size() : comma;
}

backends::IscsiOptions parse_iscsi_uri(std::string_view uri) {
  if (!uri.starts_with(kIscsiScheme)) bad("expected iscsi://PORTAL[,PORTAL...]/TARGET-IQN/LUN");
  std::string_view rest = uri.substr(kIscsiScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) bad("expected iscsi://PORTAL[,PORTAL...]/TARGET-IQN/LUN");
  backends::IscsiOptions options;
  std::string_view portals = rest.substr(0, slash);
  if (portals.empty()) bad("no portal (expected iscsi://HOST[:PORT]/TARGET-IQN/LUN)");
  for (;;) {
    size_t comma = portals.find(',');
    options.portals.push_back(parse_host_port(portals.substr(0, comma), kDefaultPort, "portal"));
    if (comma == std::string_view::npos) break;
    portals = portals.substr(comma + 1);
  }
  for (size_t i = 0; i < options.portals.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (options.portals[i] == options.portals[j]) bad("portal " + options.portals[i] + " is given twice");
  std::string_view target_and_lun = rest.substr(slash + 1);
  size_t last = target_and_lun.rfind('/');
  if (last == std::string_view::npos) bad("expected /TARGET-IQN/LUN after the portals");
  std::string_view target = target_and_lun.substr(0, last);
  std::string_view lun = target_and_lun.substr(last + 1);
  if (target.empty()) bad("empty target name (expected an IQN, e.g. iqn.2026-01.com.example:vol1)");
  if (target.find('/') != std::string_view::npos) bad("target '" + std::string(target) + "' contains '/'");
  if (!(target.starts_with("iqn.") || target.starts_with("eui.") || target.starts_with("naa.")))
    bad("target '" + std::string(target) + "' is not an iSCSI name (iqn., eui. or naa.)");
  unsigned number = 0;
  if (!parse_unsigned(lun, kMaxLun, number))
    bad("LUN '" + std::string(lun) + "' must be a number 0-" + std::to_string(kMaxLun));
  options.target = std::string(target);
  options.lun = static_cast<int>(number);
  return options;
}

bool apply_iscsi_option(backends::IscsiOptions& options, std::string_view key,
                        std::string_view value, bool has_value) {
  if (!has_value) return false;
  auto need_value = [&] {
    if (value.empty()) bad(std::string(key) + " needs a value");
  };
  if (key == "chap-user") {
    need_value();
    options.chap_user = std::string(value);
  } else if (key == "chap-secret-file") {
    need_value();
    options.chap_secret_file = std::string(value);
  } else if (key == "mutual-chap-user") {
    need_value();
    options.mutual_chap_user = std::string(value);
  } else if (key == "mutual-chap-secret-file") {
    need_value();
    options.mutual_chap_secret_file = std::string(value);
  } else if (key == "initiator-name") {
    need_value();
    options.initiator_name = std::string(value);
  } else if (key == "path-policy") {
    if (value == "failover")
      options.path_policy = backends::PathPolicy::failover;
    else if (value == "round-robin")
      options.path_policy = backends::PathPolicy::round_robin;
    else
      bad("path-policy '" + std::string(value) + "' must be failover or round-robin");
  } else if (key == "reservations") {
    if (value == "on")
      options.reservations = true;
    else if (value == "off")
      options.reservations = false;
    else
      bad("reservations '" + std::string(value) + "' must be on or off");
  } else if (key == "no-path-timeout") {
    options.no_path_timeout = parse_seconds(key, value, 0);
  } else if (key == "path-check-interval") {
    options.path_check_interval = parse_seconds(key, value, 1);
  } else if (key == "io-timeout") {
    options.io_timeout = parse_seconds(key, value, 1);
  } else if (key == "login-timeout") {
    options.login_timeout = parse_seconds(key, value, 1);
  } else {
    return false;
  }
  return true;
}

void check_iscsi_options(const backends::IscsiOptions& options) {
  if (options.chap_user.empty() != options.chap_secret_file.empty())
    bad("chap-user and chap-secret-file go together");
  if (options.mutual_chap_user.empty() != options.mutual_chap_secret_file.empty())
    bad("mutual-chap-user and mutual-chap-secret-file go together");
  if (!options.mutual_chap_user.empty() && options.chap_user.empty())
    bad("mutual CHAP needs chap-user and chap-secret-file as well");
}

}  // namespace volgate::gateway
