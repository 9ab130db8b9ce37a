#include "gateway/control_protocol.hpp"

#include <set>

#include "gateway/iscsi_spec.hpp"
#include "gateway/nbd_spec.hpp"

namespace volgate::gateway::control {
namespace {

[[noreturn]] void bad(const std::string& why) { throw ProtocolError(why); }

std::string_view view(const WipingString& s) { return {s.data(), s.size()}; }
WipingString wiping(std::string_view s) { return WipingString(s.data(), s.size()); }

const char* type_of(const Json& j) {
  if (j.is_number_integer()) return j.get<int64_t>() < 0 ? "a negative integer" : "an integer";
  if (j.is_number()) return "a number";
  return j.type_name();
}

// The keys of one JSON object, read at most once each; done() refuses the ones nobody read,
// so a misspelt optional key is an error instead of a silently ignored setting.
class ObjectReader {
 public:
  ObjectReader(const Json& json, std::string where) : json_(json), where_(std::move(where)) {
    if (!json.is_object()) bad(where_ + " must be an object, not " + type_of(json));
  }

  const Json* optional(const char* key) {
    read_.insert(key);
    auto it = json_.find(key);
    return it == json_.end() ? nullptr : &*it;
  }
  const Json& required(const char* key) {
    const Json* value = optional(key);
    if (!value) bad(name(key) + " is missing");
    return *value;
  }

  std::string string(const char* key) { return string_value(key, required(key)); }
  std::optional<std::string> optional_string(const char* key) {
    const Json* value = optional(key);
    if (!value) return std::nullopt;
    return string_value(key, *value);
  }
  // An absolute path: the gateway's working directory is not the caller's.
  std::string path(const char* key) { return path_value(key, string(key)); }
  std::optional<std::string> optional_path(const char* key) {
    auto value = optional_string(key);
    if (value) path_value(key, *value);
    return value;
  }
  bool boolean(const char* key, bool fallback) {
    const Json* value = optional(key);
    if (!value) return fallback;
    if (!value->is_boolean()) bad(name(key) + " must be true or false, not " + type_of(*value));
    return value->get<bool>();
  }
  uint64_t unsigned_number(const char* key) { return unsigned_value(key, required(key)); }
  std::optional<uint64_t> optional_unsigned(const char* key) {
    const Json* value = optional(key);
    if (!value) return std::nullopt;
    return unsigned_value(key, *value);
  }

  void done() const {
    for (auto it = json_.begin(); it != json_.end(); ++it)
      if (!read_.contains(std::string(view(it.key()))))
        bad("unknown key '" + std::string(view(it.key())) + "' in " + where_);
  }

  std::string name(const char* key) const { return where_ + "." + key; }

 private:
  std::string string_value(const char* key, const Json& value) const {
    if (!value.is_string()) bad(name(key) + " must be a string, not " + type_of(value));
    const auto& s = value.get_ref<const WipingString&>();
    if (s.empty()) bad(name(key) + " must not be empty");
    if (s.find('\0') != WipingString::npos) bad(name(key) + " contains a NUL character");
    return std::string(view(s));
  }
  std::string path_value(const char* key, const std::string& value) const {
    if (value.front() != '/') bad(name(key) + " must be an absolute path");
    return value;
  }
  uint64_t unsigned_value(const char* key, const Json& value) const {
    // A non-negative integer that was built as signed (an int64_t field) counts too.
    const bool non_negative = value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
    if (!non_negative) bad(name(key) + " must be a non-negative integer, not " + type_of(value));
    return value.get<uint64_t>();
  }

  const Json& json_;
  std::string where_;
  std::set<std::string, std::less<>> read_;
};

// Ceph names may hold almost anything but the separators of POOL/[NAMESPACE/]IMAGE[@SNAP].
std::string ceph_name(ObjectReader& r, const char* key, std::string_view forbidden) {
  std::string value = r.string(key);
  if (value.find_first_of(forbidden) != std::string::npos)
    bad(r.name(key) + " must not contain '" + std::string(forbidden.substr(0, 1)) + "'" +
        (forbidden.size() > 1 ? " or '" + std::string(forbidden.substr(1)) + "'" : ""));
  return value;
}

void rbd_from_json(ObjectReader& r, ExportSpec& spec) {
  spec.backend = ExportSpec::Backend::rbd;
  spec.rbd.pool = ceph_name(r, "pool", "/");
  if (r.optional("namespace")) spec.rbd.rados_namespace = ceph_name(r, "namespace", "/");
  spec.rbd.image = ceph_name(r, "image", "/@");
  if (r.optional("snapshot")) spec.rbd.snapshot = ceph_name(r, "snapshot", "@");
  if (auto conf = r.optional_path("ceph_conf")) spec.rbd.ceph_conf = *conf;
  if (auto id = r.optional_string("ceph_id")) {
    if (id->starts_with("client.")) bad(r.name("ceph_id") + " is the client name without 'client.', e.g. admin");
    spec.rbd.ceph_id = *id;
  }
  if (auto keyring = r.optional_path("keyring")) spec.rbd.keyring = *keyring;
}

// The iSCSI fields go through the same checks as the command line's iscsi:// syntax.
void iscsi_from_json(ObjectReader& r, ExportSpec& spec) {
  spec.backend = ExportSpec::Backend::iscsi;
  const Json& portals = r.required("portals");
  if (!portals.is_array() || portals.empty())
    bad(r.name("portals") + " must be a non-empty array of \"HOST:PORT\" strings");
  if (portals.size() > 64) bad(r.name("portals") + " lists more than 64 portals");
  std::string uri(kIscsiScheme);
  for (size_t i = 0; i < portals.size(); ++i) {
    const Json& p = portals[i];
    const std::string where = r.name("portals") + "[" + std::to_string(i) + "]";
    if (!p.is_string() || p.get_ref<const WipingString&>().empty()) bad(where + " must be a \"HOST:PORT\" string");
    std::string_view text = view(p.get_ref<const WipingString&>());
    if (text.find_first_of(",/") != std::string_view::npos) bad(where + " must not contain ',' or '/'");
    uri += (i ? "," : "") + std::string(text);
  }
  std::string iqn = r.string("iqn");
  if (iqn.find(',') != std::string::npos) bad(r.name("iqn") + " must not contain ','");
  uint64_t lun = r.unsigned_number("lun");
  uri += "/" + iqn + "/" + std::to_string(lun);
  try {
    spec.iscsi = parse_iscsi_uri(uri);
  } catch (const std::invalid_argument& e) {
    bad(r.name("portals") + "/iqn/lun: " + e.what());
  }
  auto apply = [&](const char* key, const char* option, const std::string& value) {
    try {
      apply_iscsi_option(spec.iscsi, option, value, true);
    } catch (const std::invalid_argument& e) {
      bad(r.name(key) + ": " + e.what());
    }
  };
  static constexpr std::pair<const char*, const char*> kStrings[] = {
      {"initiator_name", "initiator-name"},
      {"chap_user", "chap-user"},
      {"mutual_chap_user", "mutual-chap-user"},
      {"path_policy", "path-policy"},
  };
  for (auto [key, option] : kStrings)
    if (auto value = r.optional_string(key)) apply(key, option, *value);
  static constexpr std::pair<const char*, const char*> kPaths[] = {
      {"chap_secret_file", "chap-secret-file"},
      {"mutual_chap_secret_file", "mutual-chap-secret-file"},
  };
  for (auto [key, option] : kPaths)
    if (auto value = r.optional_path(key)) apply(key, option, *value);
  static constexpr std::pair<const char*, const char*> kSeconds[] = {
      {"no_path_timeout", "no-path-timeout"},
      {"path_check_interval", "path-check-interval"},
      {"io_timeout", "io-timeout"},
      {"login_timeout", "login-timeout"},
  };
  for (auto [key, option] : kSeconds)
    if (auto value = r.optional_unsigned(key)) apply(key, option, std::to_string(*value));
  if (r.optional("reservations")) spec.iscsi.reservations = r.boolean("reservations", true);
  try {
    check_iscsi_options(spec.iscsi);
  } catch (const std::invalid_argument& e) {
    bad("target: " + std::string(e.what()));
  }
}

Json iscsi_to_json(const backends::IscsiOptions& o) {
  Json portals = Json::array();
  for (const auto& p : o.portals) portals.push_back(wiping(p));
  Json j = {{"backend", "iscsi"},
            {"portals", std::move(portals)},
            {"iqn", wiping(o.target)},
            {"lun", static_cast<uint64_t>(o.lun)},
            {"initiator_name", wiping(o.initiator_name)},
            {"path_policy", o.path_policy == backends::PathPolicy::round_robin ? "round-robin" : "failover"},
            {"no_path_timeout", static_cast<uint64_t>(o.no_path_timeout.count())},
            {"path_check_interval", static_cast<uint64_t>(o.path_check_interval.count())},
            {"io_timeout", static_cast<uint64_t>(o.io_timeout.count() / 1000)},
            {"login_timeout", static_cast<uint64_t>(o.login_timeout.count() / 1000)},
            {"reservations", o.reservations}};
  if (!o.chap_user.empty()) j["chap_user"] = wiping(o.chap_user);
  if (!o.chap_secret_file.empty()) j["chap_secret_file"] = wiping(o.chap_secret_file);
  if (!o.mutual_chap_user.empty()) j["mutual_chap_user"] = wiping(o.mutual_chap_user);
  if (!o.mutual_chap_secret_file.empty()) j["mutual_chap_secret_file"] = wiping(o.mutual_chap_secret_file);
  return j;
}

// The NBD upstream as the command line's URI and options, through the same checks.
void nbd_from_json(ObjectReader& r, ExportSpec& spec) {
  spec.backend = ExportSpec::Backend::nbd;
  try {
    spec.nbd = parse_nbd_uri(r.string("uri"));
  } catch (const std::invalid_argument& e) {
    bad(r.name("uri") + ": " + e.what());
  }
  static constexpr std::pair<const char*, const char*> kNumbers[] = {
      {"reconnect_delay", "reconnect-delay"},
      {"connections", "connections"},
      {"connect_timeout", "connect-timeout"},
  };
  for (auto [key, option] : kNumbers) {
    if (auto value = r.optional_unsigned(key)) {
      try {
        apply_nbd_option(spec.nbd, option, std::to_string(*value), true);
      } catch (const std::invalid_argument& e) {
        bad(r.name(key) + ": " + e.what());
      }
    }
  }
}

Json nbd_to_json(const backends::NbdOptions& o) {
  return {{"backend", "nbd"},
          {"uri", wiping(o.uri)},
          {"reconnect_delay", static_cast<uint64_t>(o.reconnect_delay.count())},
          {"connections", static_cast<uint64_t>(o.connections)},
          {"connect_timeout", static_cast<uint64_t>(o.connect_timeout.count())}};
}

RequestCounters counters_from_json(const Json& json) {
  ObjectReader r(json, "export.requests");
  RequestCounters c;
  c.read = r.unsigned_number("read");
  c.write = r.unsigned_number("write");
  c.bytes_read = r.unsigned_number("bytes_read");
  c.bytes_written = r.unsigned_number("bytes_written");
  c.errors = r.unsigned_number("errors");
  return c;  // answers may grow new keys: not done()
}

}  // namespace

bool valid_export_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':'))
      return false;
  return true;
}

ExportSpec target_from_json(const Json& target) {
  ObjectReader r(target, "target");
  ExportSpec spec;
  std::string backend = r.string("backend");
  if (backend == "file") {
    spec.backend = ExportSpec::Backend::file;
    spec.path = r.path("path");
    spec.direct = r.boolean("direct", false);
  } else if (backend == "memory") {
    spec.backend = ExportSpec::Backend::memory;
    spec.memory_size = r.unsigned_number("size");
    if (spec.memory_size == 0) bad("target.size must be more than 0");
  } else if (backend == "rbd") {
    rbd_from_json(r, spec);
  } else if (backend == "iscsi") {
    iscsi_from_json(r, spec);
  } else if (backend == "nbd") {
    nbd_from_json(r, spec);
  } else {
    bad("target.backend '" + backend + "' is not one of file, memory, rbd, iscsi, nbd");
  }
  r.done();
  return spec;
}

Json target_to_json(const ExportSpec& spec) {
  switch (spec.backend) {
    case ExportSpec::Backend::file: {
      Json j = {{"backend", "file"}, {"path", wiping(spec.path)}};
      if (spec.direct) j["direct"] = true;
      return j;
    }
    case ExportSpec::Backend::memory:
      return {{"backend", "memory"}, {"size", spec.memory_size}};
    case ExportSpec::Backend::rbd: {
      const auto& o = spec.rbd;
      Json j = {{"backend", "rbd"}, {"pool", wiping(o.pool)}, {"image", wiping(o.image)}};
      if (o.rados_namespace) j["namespace"] = wiping(*o.rados_namespace);
      if (o.snapshot) j["snapshot"] = wiping(*o.snapshot);
      if (o.ceph_conf) j["ceph_conf"] = wiping(*o.ceph_conf);
      if (!o.ceph_id.empty()) j["ceph_id"] = wiping(o.ceph_id);
      if (o.keyring) j["keyring"] = wiping(*o.keyring);
      return j;
    }
    case ExportSpec::Backend::iscsi:
      return iscsi_to_json(spec.iscsi);
    case ExportSpec::Backend::nbd:
      return nbd_to_json(spec.nbd);
  }
  throw std::logic_error("unhandled backend");
}

PutExportRequest put_request_from_json(const Json& body) {
  ObjectReader r(body, "body");
  PutExportRequest request;
  request.target = target_from_json(r.required("target"));
  request.read_only = r.boolean("read_only", false);
  request.target.read_only = request.read_only;
  request.target.iscsi.read_only = request.read_only;
  request.target.nbd.read_only = request.read_only;
  if (request.target.backend == ExportSpec::Backend::rbd && request.target.rbd.snapshot && !request.read_only)
    bad("read_only must be true for an RBD snapshot (snapshots cannot be written)");
  if (const Json* luks = r.optional("luks")) {
    ObjectReader lr(*luks, "luks");
    const Json* key = lr.optional("volume_key");
    const Json* passphrase = lr.optional("passphrase");
    lr.done();
    if (!key == !passphrase) bad("luks must hold exactly one of volume_key and passphrase");
    const char* field = key ? "luks.volume_key" : "luks.passphrase";
    const Json& value = key ? *key : *passphrase;
    if (!value.is_string()) bad(std::string(field) + " must be a base64 string, not " + type_of(value));
    LuksKey k;
    k.kind = key ? LuksKey::Kind::volume_key : LuksKey::Kind::passphrase;
    k.bytes = decode_base64_secret(view(value.get_ref<const WipingString&>()), field);
    if (k.bytes.empty()) bad(std::string(field) + " is empty");
    request.luks = std::move(k);
  }
  r.done();
  return request;
}

Json put_request_to_json(const ExportSpec& target, bool read_only, const LuksKey* luks) {
  Json j = {{"target", target_to_json(target)}, {"read_only", read_only}};
  if (luks)
    j["luks"] = {{luks->kind == LuksKey::Kind::volume_key ? "volume_key" : "passphrase",
                  encode_base64(luks->bytes.span())}};
  return j;
}

Json export_to_json(const ExportInfo& info) {
  return {{"name", wiping(info.name)},
          {"target", target_to_json(info.target)},
          {"read_only", info.read_only},
          {"encrypted", info.encrypted},
          {"size", info.size},
          {"connections", info.connections},
          {"requests",
           {{"read", info.requests.read},
            {"write", info.requests.write},
            {"bytes_read", info.requests.bytes_read},
            {"bytes_written", info.requests.bytes_written},
            {"errors", info.requests.errors}}}};
}

ExportInfo export_from_json(const Json& json) {
  ObjectReader r(json, "export");
  ExportInfo info;
  info.name = r.string("name");
  info.target = target_from_json(r.required("target"));
  info.read_only = r.boolean("read_only", false);
  info.target.read_only = info.read_only;
  info.encrypted = r.boolean("encrypted", false);
  info.size = r.unsigned_number("size");
  uint64_t connections = r.unsigned_number("connections");
  if (connections > UINT32_MAX) bad("export.connections is out of range");
  info.connections = static_cast<uint32_t>(connections);
  info.requests = counters_from_json(r.required("requests"));
  return info;
}

Json health_to_json(const Health& health) {
  return {{"status", wiping(health.status)},
          {"exports", health.exports},
          {"connections", health.connections},
          {"pid", health.pid}};
}

Health health_from_json(const Json& json) {
  ObjectReader r(json, "health");
  Health h;
  h.status = r.string("status");
  h.exports = r.unsigned_number("exports");
  h.connections = r.unsigned_number("connections");
  h.pid = static_cast<int64_t>(r.unsigned_number("pid"));
  return h;
}

Json error_to_json(int code, std::string_view message) {
  return {{"error", {{"message", wiping(message)}, {"code", code}}}};
}

WipingString to_text(const Json& body) { return body.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::optional<std::string> error_message_from_json(const Json& json) {
  if (!json.is_object()) return std::nullopt;
  auto error = json.find("error");
  if (error == json.end() || !error->is_object()) return std::nullopt;
  auto message = error->find("message");
  if (message == error->end() || !message->is_string()) return std::nullopt;
  return std::string(view(message->get_ref<const WipingString&>()));
}

crypto::SecureBytes decode_base64_secret(std::string_view text, std::string_view field) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) bad(std::string(field) + " is not base64 (its length is not a multiple of 4)");
  size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  crypto::SecureBytes out(text.size() / 4 * 3);
  size_t written = 0;
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t group = 0;
    for (size_t k = 0; k < 4; ++k) {
      const bool pad = i + k >= text.size() - padding;
      const int v = pad ? 0 : value_of(text[i + k]);
      if (v < 0) bad(std::string(field) + " is not base64 (a character outside the alphabet)");
      group = (group << 6) | static_cast<uint32_t>(v);
    }
    const size_t bytes = i + 4 == text.size() ? 3 - padding : 3;
    for (size_t k = 0; k < bytes; ++k) out.data()[written++] = static_cast<std::byte>(group >> (16 - 8 * k));
    group = 0;
  }
  out.shrink(written);
  return out;
}

WipingString encode_base64(std::span<const std::byte> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  WipingString out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t group = 0;
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    for (size_t k = 0; k < 3; ++k) group = (group << 8) | (k < n ? std::to_integer<uint32_t>(bytes[i + k]) : 0);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(group >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

}  // namespace volgate::gateway::control
