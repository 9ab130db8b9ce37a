#include "gateway/handover_state.hpp"

#include <filesystem>

#include "gateway/handover_channel.hpp"
#include "gateway/serve_command.hpp"

namespace volgate::gateway::handover {
namespace {

using control::Json;

WipingString wiping(std::string_view s) { return WipingString(s.data(), s.size()); }
std::string plain(const WipingString& s) { return std::string(s.data(), s.size()); }

// The field, of the type asked for, or HandoverError naming the message and the field.
template <class T>
T field(const Json& json, const char* message, const char* key) {
  auto it = json.find(key);
  try {
    if (it == json.end()) throw std::out_of_range("missing");
    if constexpr (std::is_same_v<T, std::string>) return plain(it->template get<WipingString>());
    else return it->template get<T>();
  } catch (const std::exception&) {
    throw HandoverError(std::string("hand-over: the '") + message + "' message has no valid '" + key + "'");
  }
}

std::string absolute(const std::string& path) {
  return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
}

}  // namespace

Json message(std::string_view type) { return Json{{"type", wiping(type)}}; }

std::string type_of(const Json& message) { return field<std::string>(message, "any", "type"); }

std::string reason_of(const Json& message) {
  auto it = message.find("message");
  return it != message.end() && it->is_string() ? plain(it->get_ref<const WipingString&>()) : "no reason given";
}

Json offer_to_json() { return Json{{"versions", Json::array({kVersion})}}; }

std::vector<int> offered_versions(const Json& body) {
  std::vector<int> versions;
  auto it = body.find("versions");
  if (it == body.end() || !it->is_array())
    throw HandoverError("hand-over: the request has no 'versions' list");
  for (const auto& v : *it)
    if (v.is_number_integer()) versions.push_back(v.get<int>());
  return versions;
}

Json state_to_json(const State& state) {
  const Settings& s = state.settings;
  Json exports = Json::array();
  for (const auto& e : state.exports)
    exports.push_back({{"name", wiping(e.name)},
                       {"request", control::put_request_to_json(e.target, e.read_only,
                                                                 e.luks ? &*e.luks : nullptr)}});
  Json j = message("state");
  j["version"] = state.version;
  j["pid"] = state.pid;
  j["settings"] = {{"threads", s.threads},
                   {"poll_max_us", s.poll_max_us},
                   {"max_connections", s.max_connections},
                   {"max_buffer_bytes", wiping(s.max_buffer_bytes)},
                   {"handshake_timeout_s", s.handshake_timeout_s},
                   {"tls",
                    {{"mode", wiping(s.tls.mode)},
                     {"certificates_dir", wiping(s.tls.certificates_dir)},
                     {"psk_file", wiping(s.tls.psk_file)},
                     {"verify_peer", s.tls.verify_peer}}}};
  j["nbd_listeners"] = state.nbd_listeners;
  j["metrics"] = state.metrics;
  j["exports"] = std::move(exports);
  return j;
}

State state_from_json(const Json& json) {
  State state;
  state.version = field<int>(json, "state", "version");
  if (state.version != kVersion)
    throw HandoverError("hand-over: the running gateway sent state version " + std::to_string(state.version) +
                        "; this binary reads version " + std::to_string(kVersion));
  state.pid = field<int64_t>(json, "state", "pid");
  const Json settings = field<Json>(json, "state", "settings");
  Settings& s = state.settings;
  s.threads = field<unsigned>(settings, "state", "threads");
  s.poll_max_us = field<unsigned>(settings, "state", "poll_max_us");
  s.max_connections = field<unsigned>(settings, "state", "max_connections");
  s.max_buffer_bytes = field<std::string>(settings, "state", "max_buffer_bytes");
  s.handshake_timeout_s = field<unsigned>(settings, "state", "handshake_timeout_s");
  const Json tls = field<Json>(settings, "state", "tls");
  s.tls.mode = field<std::string>(tls, "state", "mode");
  s.tls.certificates_dir = field<std::string>(tls, "state", "certificates_dir");
  s.tls.psk_file = field<std::string>(tls, "state", "psk_file");
  s.tls.verify_peer = field<bool>(tls, "state", "verify_peer");
  state.nbd_listeners = field<size_t>(json, "state", "nbd_listeners");
  state.metrics = field<bool>(json, "state", "metrics");
  const Json exports = field<Json>(json, "state", "exports");
  if (!exports.is_array()) throw HandoverError("hand-over: the 'state' message's 'exports' is not a list");
  for (const auto& e : exports) {
    ExportDefinition d;
    d.name = field<std::string>(e, "state", "name");
    try {
      control::PutExportRequest request = control::put_request_from_json(field<Json>(e, "state", "request"));
      d.target = std::move(request.target);
      d.target.name = d.name;
      d.read_only = request.read_only;
      d.luks = std::move(request.luks);
    } catch (const control::ProtocolError& error) {
      throw HandoverError("hand-over: export '" + d.name + "': " + error.what());
    }
    state.exports.push_back(std::move(d));
  }
  return state;
}

Json connection_to_json(const nbd::PausedConnection& c) {
  Json j = message("connection");
  j["family"] = c.family;
  j["peer"] = wiping(c.peer);
  j["export"] = wiping(c.export_name);
  j["structured_replies"] = c.structured_replies;
  j["base_allocation"] = c.base_allocation;
  j["unparsed"] = control::encode_base64(c.unparsed);
  return j;
}

nbd::PausedConnection connection_from_json(const Json& json) {
  nbd::PausedConnection c;
  c.family = field<int>(json, "connection", "family");
  c.peer = field<std::string>(json, "connection", "peer");
  c.export_name = field<std::string>(json, "connection", "export");
  c.structured_replies = field<bool>(json, "connection", "structured_replies");
  c.base_allocation = field<bool>(json, "connection", "base_allocation");
  // Guest data, not a secret, but the decoder at hand puts it in locked memory: copied out.
  const auto unparsed = field<std::string>(json, "connection", "unparsed");
  try {
    crypto::SecureBytes bytes = control::decode_base64_secret(unparsed, "unparsed");
    c.unparsed.assign(bytes.data(), bytes.data() + bytes.size());
  } catch (const control::ProtocolError& e) {
    throw HandoverError(std::string("hand-over: ") + e.what());
  }
  return c;
}

ExportSpec with_absolute_paths(ExportSpec spec) {
  spec.path = absolute(spec.path);
  if (spec.rbd.ceph_conf) spec.rbd.ceph_conf = absolute(*spec.rbd.ceph_conf);
  if (spec.rbd.keyring) spec.rbd.keyring = absolute(*spec.rbd.keyring);
  spec.iscsi.chap_secret_file = absolute(spec.iscsi.chap_secret_file);
  spec.iscsi.mutual_chap_secret_file = absolute(spec.iscsi.mutual_chap_secret_file);
  return spec;
}

Settings settings_of(const ServeOptions& o) {
  Settings s{o.threads, o.poll_max_us, o.max_connections, o.max_buffer_bytes, o.handshake_timeout_s, o.tls};
  s.tls.certificates_dir = absolute(s.tls.certificates_dir);
  s.tls.psk_file = absolute(s.tls.psk_file);
  return s;
}

}  // namespace volgate::gateway::handover
