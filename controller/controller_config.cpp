#include "controller/controller_config.hpp"

#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/metrics_http_server.hpp"
#include "controller/api/token_table.hpp"
#include "controller/pools/iscsi_name.hpp"
#include "crypto/chap_secret.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& where, const std::string& why) {
  throw std::runtime_error(where + ": " + why);
}

// Refuses any key of `object` not in `known`.
void only_keys(const json& object, const std::string& where, std::initializer_list<const char*> known) {
  if (!object.is_object()) bad(where, "expected an object");
  for (const auto& [key, value] : object.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) bad(where, "unknown key '" + key + "'");
  }
}

template <class T>
void get(const json& object, const char* key, T& out, const std::string& where) {
  if (!object.contains(key)) return;
  try {
    out = object.at(key).get<T>();
  } catch (const json::exception&) {
    bad(where + "." + key, "wrong type");
  }
}

std::string resolve(const std::string& path, const std::string& state_dir) {
  if (path.empty() || path.front() == '/') return path;
  return state_dir + "/" + path;
}

void add_default_types(ControllerConfig& config) {
  if (!config.volume_types.count("default")) config.volume_types["default"] = {.name = "default"};
  if (!config.volume_types.count("encrypted"))
    config.volume_types["encrypted"] = {.name = "encrypted", .description = "LUKS2, passphrase kept by the controller",
                                        .encrypted = true};
}

void default_luks(crypto::LuksFormatOptions& luks) {
  luks.type = "luks2";
  luks.pbkdf = "pbkdf2";
  luks.pbkdf_iterations = 1000;
}

// `a` is `b` or a directory above it (both absolute, compared by their components).
bool contains(const std::filesystem::path& a, const std::filesystem::path& b) {
  auto [ai, bi] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return ai == a.end() || (std::next(ai) == a.end() && ai->empty());  // a trailing '/' in `a`
}

// An image directory is readable by every API user: it must not hold what the controller keeps
// for itself (its state, keys, database, pools).
void check_image_dirs(const ControllerConfig& config) {
  for (const auto& image_dir : config.image_dirs) {
    if (image_dir.empty()) throw std::runtime_error("image_dirs: an empty path");
    const auto dir = std::filesystem::absolute(image_dir).lexically_normal();
    std::vector<std::string> private_paths = {config.state_dir, config.database, config.token_file,
                                              config.master_key_file};
    for (const auto& token : config.tokens) private_paths.push_back(token.token_file);
    for (const auto& pool : config.pools) {
      private_paths.push_back(pool.directory);
      private_paths.push_back(pool.ceph_keyring);
      if (!pool.ceph_conf.empty()) private_paths.push_back(std::filesystem::path(pool.ceph_conf).parent_path());
    }
    for (const auto& p : private_paths)
      if (!p.empty() && contains(dir, std::filesystem::absolute(p).lexically_normal()))
        throw std::runtime_error("image directory " + image_dir + " contains " + p +
                                 ", which API users must not be able to read");
  }
}

// CHAP secrets outside these bounds are refused up front rather than failing at every login.
// CHAP over plain TCP lets anyone who sees one login guess the secret offline, so a short one
// is little protection (Microsoft's initiator refuses fewer than 12 bytes for the same reason);
// tgtd and libiscsi each keep at most 255 bytes of a secret and silently cut the rest.
constexpr size_t kMinChapSecret = 12;
constexpr size_t kMaxChapSecret = 255;
constexpr size_t kMaxChapUser = 255;

// Letters, digits and . _ : -: the user travels in tgtadm's "user=U,password=P" request and in
// the export target's comma-separated options, where ',' and '=' would split it.
bool is_chap_user(const std::string& user) {
  if (user.empty() || user.size() > kMaxChapUser) return false;
  for (char c : user)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' && c != '-') return false;
  return true;
}

// An iscsi pool's access settings: the initiator name (defaulted here), and the CHAP user and
// secret, which is read now so that a missing or unusable file stops the start with its name.
void finish_iscsi_access(PoolConfig& pool) {
  const std::string where = "pool '" + pool.name + "'";
  if (pool.driver != "iscsi") {
    if (!pool.initiator_name.empty() || !pool.chap_user.empty() || !pool.chap_secret_file.empty())
      throw std::runtime_error(where + ": initiator_name, chap_user and chap_secret_file are for iscsi pools");
    return;
  }
  if (pool.initiator_name.empty()) pool.initiator_name = default_initiator_name();
  if (std::string problem = iscsi_name_problem(pool.initiator_name); !problem.empty())
    throw std::runtime_error(where + ": initiator_name '" + pool.initiator_name + "' is not an iSCSI name: " + problem);
  if (!pool.chap_user.empty() && pool.chap_secret_file.empty())
    throw std::runtime_error(where + ": chap_user needs chap_secret_file (a file holding the secret; the config "
                             "never holds it)");
  if (pool.chap_user.empty() && !pool.chap_secret_file.empty())
    throw std::runtime_error(where + ": chap_secret_file needs chap_user");
  if (pool.chap_user.empty()) return;
  if (!is_chap_user(pool.chap_user))
    throw std::runtime_error(where + ": chap_user '" + pool.chap_user + "' must be 1-" + std::to_string(kMaxChapUser) +
                             " letters, digits, '.', '_', ':' or '-'");
  if (pool.chap_secret_file.find(',') != std::string::npos)
    throw std::runtime_error(where + ": chap_secret_file " + pool.chap_secret_file +
                             ": a path with ',' cannot go into the export target, whose options ',' separates");
  size_t length = 0;
  try {
    length = crypto::secret_length(crypto::read_chap_secret(pool.chap_secret_file));
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": chap_secret_file: " + e.what());
  }
  if (length < kMinChapSecret || length > kMaxChapSecret)
    throw std::runtime_error(where + ": chap_secret_file " + pool.chap_secret_file + ": the CHAP secret must be " +
                             std::to_string(kMinChapSecret) + "-" + std::to_string(kMaxChapSecret) + " bytes");
}

// Fills in the gateway's defaults (sockets in DIR/run, which QEMU may reach: see controller_command).
void finish_gateway(GatewayConfig& g, const std::string& dir) {
  if (g.control_socket.empty()) g.control_socket = dir + "/run/gateway.sock";
  if (g.control_socket == "none") {
    if (g.start) throw std::runtime_error("gateway.control_socket is none, so no gateway can be started (--gateway)");
    g.control_socket.clear();
    return;
  }
  if (g.nbd_socket.empty()) g.nbd_socket = dir + "/run/nbd.sock";
  if (g.log_file.empty()) g.log_file = dir + "/gateway.log";
  if (g.control_socket.front() != '/' || g.nbd_socket.front() != '/')
    throw std::runtime_error("gateway.control_socket and gateway.nbd_socket must be absolute paths");
  if (g.socket_group == "auto") g.socket_group = qemu_socket_group();
  if (g.check_interval.count() <= 0 || g.repair_interval.count() <= 0)
    throw std::runtime_error("gateway.check_interval and gateway.repair_interval must be more than 0");
}

}  // namespace

std::string qemu_socket_group() {
  struct group* g = ::getgrnam("libvirt-qemu");
  if (!g) return {};
  if (::geteuid() == 0) return g->gr_name;
  // Without root, only a group this process is in can be given to a socket.
  std::vector<gid_t> groups(static_cast<size_t>(std::max(::getgroups(0, nullptr), 0)));
  int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
  for (int i = 0; i < n; ++i)
    if (groups[static_cast<size_t>(i)] == g->gr_gid) return g->gr_name;
  return ::getegid() == g->gr_gid ? std::string(g->gr_name) : std::string();
}

ControllerConfig default_config(const std::string& state_dir) {
  ControllerConfig config;
  config.state_dir = state_dir;
  default_luks(config.luks);
  config.pools.push_back({.name = "default", .driver = "file", .directory = state_dir + "/pool"});
  finish_config(config);
  return config;
}

void finish_config(ControllerConfig& config) {
  if (config.state_dir.empty()) throw std::runtime_error("no state directory: give --state-dir or state_dir");
  const std::string& dir = config.state_dir;
  if (config.database.empty()) config.database = dir + "/controller.db";
  if (config.unix_socket.empty()) config.unix_socket = dir + "/controller.sock";
  if (config.unix_socket == "none") {
    if (config.tcp_listen.empty()) throw std::runtime_error("unix_socket is none and there is no tcp_listen");
    config.unix_socket.clear();
  }
  if (config.token_file.empty()) config.token_file = dir + "/token";
  if (config.master_key_file.empty()) config.master_key_file = dir + "/master.key";
  if (config.image_dirs.empty()) config.image_dirs.push_back(dir + "/images");
  if (config.backups.kind == "directory" && config.backups.directory.empty()) config.backups.directory = dir + "/backups";
  if (config.backups.kind == "rados" && config.backups.rados_pool.empty())
    throw std::runtime_error("backups.rados_pool is needed for a repository of kind rados");
  if (config.backups.kind != "directory" && config.backups.kind != "rados")
    throw std::runtime_error("backups.kind must be directory or rados, not '" + config.backups.kind + "'");
  {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    config.backups.owner = std::string(host) + ":" + dir;
  }
  if (config.backups.zstd_level < 1 || config.backups.zstd_level > 19)
    throw std::runtime_error("backups.zstd_level must be 1-19");
  if (config.image_upload_dir.empty()) config.image_upload_dir = config.image_dirs.front();
  if (std::find(config.image_dirs.begin(), config.image_dirs.end(), config.image_upload_dir) == config.image_dirs.end())
    throw std::runtime_error("image_upload_dir " + config.image_upload_dir + " must be one of image_dirs");
  finish_gateway(config.gateway, dir);
  check_image_dirs(config);
  add_default_types(config);
  if (!config.volume_types.count(config.default_volume_type))
    throw std::runtime_error("default_volume_type '" + config.default_volume_type + "' is not a volume type");
  if (config.workers == 0 || config.workers > 64) throw std::runtime_error("workers must be 1-64");
  std::set<std::string> names;
  // tgtd has one account per CHAP user: pools on one tgtd naming the same user share its secret.
  std::map<std::pair<std::string, std::string>, const PoolConfig*> chap_accounts;
  for (auto& pool : config.pools) {
    if (pool.name.empty() || pool.name.find_first_of("/ #@") != std::string::npos)
      throw std::runtime_error("pool name '" + pool.name + "' must be non-empty, without '/', ' ', '#', '@'");
    if (!names.insert(pool.name).second) throw std::runtime_error("pool '" + pool.name + "' is configured twice");
    if (pool.driver != "file" && pool.driver != "iscsi" && pool.driver != "rbd")
      throw std::runtime_error("pool '" + pool.name + "': unknown driver '" + pool.driver + "' (file, iscsi or rbd)");
    if (pool.driver == "rbd") {
      if (pool.rbd_pool.empty() || pool.ceph_conf.empty())
        throw std::runtime_error("pool '" + pool.name + "': an rbd pool needs rbd_pool and ceph_conf");
    } else if (pool.directory.empty())
      throw std::runtime_error("pool '" + pool.name + "': a " + pool.driver + " pool needs a directory");
    if (pool.driver == "iscsi" && pool.portals.empty())
      throw std::runtime_error("pool '" + pool.name + "': an iscsi pool needs portals");
    finish_iscsi_access(pool);
    if (pool.max_over_subscription_ratio < 1.0)
      throw std::runtime_error("pool '" + pool.name + "': max_over_subscription_ratio must be at least 1");
    if (pool.reserved_percentage < 0 || pool.reserved_percentage > 100)
      throw std::runtime_error("pool '" + pool.name + "': reserved_percentage must be 0-100");
    if (!pool.chap_user.empty()) {
      auto [it, first] = chap_accounts.try_emplace({pool.tgt_ipc_socket, pool.chap_user}, &pool);
      if (!first && it->second->chap_secret_file != pool.chap_secret_file)
        throw std::runtime_error("pools '" + it->second->name + "' and '" + pool.name + "' give CHAP user '" +
                                 pool.chap_user + "' on one tgtd two different chap_secret_files");
    }
  }
  Scheduler check(config.scheduler);  // refuses unknown weighers
}

ControllerConfig load_config(const std::string& path, const std::string& state_dir) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("config " + path + ": cannot read it");
  std::stringstream text;
  text << in.rdbuf();
  json root = json::parse(text.str(), nullptr, false);
  if (root.is_discarded()) throw std::runtime_error("config " + path + ": not valid JSON");

  const std::string where = "config " + path;
  only_keys(root, where,
            {"state_dir", "database", "unix_socket", "tcp_listen", "token_file", "master_key_file",
             "image_dirs", "api_limits", "default_availability_zone", "default_volume_type", "quotas", "workers", "scheduler",
             "volume_types", "pools", "luks", "gateway", "libvirt_uri", "libvirt", "server_shutdown_timeout",
             "cross_az_attach", "tokens", "tls_certificates", "metrics", "image_upload_dir", "image_convert_timeout",
             "backups"});
  ControllerConfig config;
  default_luks(config.luks);
  get(root, "state_dir", config.state_dir, where);
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (config.state_dir.empty()) bad(where, "no state_dir (or give --state-dir)");
  const std::string& dir = config.state_dir;
  get(root, "database", config.database, where);
  get(root, "unix_socket", config.unix_socket, where);
  get(root, "tcp_listen", config.tcp_listen, where);
  get(root, "tls_certificates", config.tls_certificates, where);
  get(root, "metrics", config.metrics, where);
  if (!config.metrics.empty()) {
    try {
      parse_metrics_address(config.metrics, "metrics");
    } catch (const std::invalid_argument& e) {
      bad(where, e.what());
    }
  }
  get(root, "token_file", config.token_file, where);
  get(root, "master_key_file", config.master_key_file, where);
  config.database = resolve(config.database, dir);
  if (config.unix_socket != "none") config.unix_socket = resolve(config.unix_socket, dir);
  config.token_file = resolve(config.token_file, dir);
  if (!config.tls_certificates.empty()) config.tls_certificates = resolve(config.tls_certificates, dir);
  config.master_key_file = resolve(config.master_key_file, dir);
  get(root, "image_dirs", config.image_dirs, where);
  for (auto& image_dir : config.image_dirs) image_dir = resolve(image_dir, dir);
  get(root, "image_upload_dir", config.image_upload_dir, where);
  if (!config.image_upload_dir.empty()) config.image_upload_dir = resolve(config.image_upload_dir, dir);
  if (root.contains("image_convert_timeout")) {
    const json& t = root["image_convert_timeout"];
    if (!t.is_number_unsigned() || t.get<uint64_t>() < 1 || t.get<uint64_t>() > 86400)
      bad(where + ".image_convert_timeout", "must be a whole number of seconds, from 1 to 86400");
    config.image_convert_timeout = std::chrono::seconds(t.get<uint64_t>());
  }
  get(root, "default_availability_zone", config.default_availability_zone, where);
  get(root, "default_volume_type", config.default_volume_type, where);
  get(root, "workers", config.workers, where);
  get(root, "libvirt_uri", config.libvirt_uri, where);
  get(root, "cross_az_attach", config.cross_az_attach, where);
  if (config.libvirt_uri == "none") config.libvirt_uri.clear();
  if (root.contains("libvirt")) {
    // Nova's [libvirt] device_detach_attempts and device_detach_timeout, under the same names.
    const json& l = root["libvirt"];
    const std::string w = where + ".libvirt";
    only_keys(l, w, {"device_detach_attempts", "device_detach_timeout", "nbd_reconnect_delay"});
    get(l, "device_detach_attempts", config.libvirt_detach.attempts, w);
    if (config.libvirt_detach.attempts < 1 || config.libvirt_detach.attempts > 100)
      bad(w + ".device_detach_attempts", "must be 1-100");
    if (l.contains("device_detach_timeout")) {
      const json& t = l["device_detach_timeout"];
      if (!t.is_number() || t.get<double>() < 0.05 || t.get<double>() > 600)
        bad(w + ".device_detach_timeout", "must be a number of seconds, from 0.05 to 600");
      config.libvirt_detach.wait_per_attempt = std::chrono::milliseconds(static_cast<int64_t>(t.get<double>() * 1000));
    }
    if (l.contains("nbd_reconnect_delay")) {
      // Whole seconds: libvirt's attribute and QEMU's option are.
      const json& t = l["nbd_reconnect_delay"];
      if (!t.is_number_unsigned() || t.get<uint64_t>() > 3600)
        bad(w + ".nbd_reconnect_delay", "must be a whole number of seconds, from 0 (none) to 3600");
      config.nbd_reconnect_delay = std::chrono::seconds(t.get<int64_t>());
    }
  }
  if (root.contains("tokens")) {
    const json& list = root["tokens"];
    if (!list.is_array())
      bad(where + ".tokens", "expected a list of {\"project\", \"role\", \"token_file\" or \"token_sha256\"}");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string w = where + ".tokens[" + std::to_string(i) + "]";
      only_keys(list[i], w, {"project", "role", "token_file", "token_sha256"});
      ApiTokenConfig token;
      std::string role = "member";
      get(list[i], "project", token.project, w);
      get(list[i], "role", role, w);
      get(list[i], "token_file", token.token_file, w);
      get(list[i], "token_sha256", token.token_sha256, w);
      if (!is_project_name(token.project)) bad(w + ".project", "must be 1-64 letters, digits, '-' or '_'");
      auto parsed = role_from_string(role);
      if (!parsed) bad(w + ".role", "must be admin or member, not '" + role + "'");
      token.role = *parsed;
      if (token.token_file.empty() == token.token_sha256.empty())
        bad(w, "give the token as exactly one of token_file and token_sha256");
      if (!token.token_sha256.empty() && !TokenTable::digest_from_hex(token.token_sha256))
        bad(w + ".token_sha256", "must be 64 hex digits (sha256sum of the token)");
      token.token_file = resolve(token.token_file, dir);
      config.tokens.push_back(std::move(token));
    }
  }
  if (root.contains("server_shutdown_timeout")) {
    const json& t = root["server_shutdown_timeout"];
    if (!t.is_number() || t.get<double>() < 0 || t.get<double>() > 3600)
      bad(where + ".server_shutdown_timeout", "must be a number of seconds, from 0 to 3600");
    config.server_shutdown_timeout = std::chrono::milliseconds(static_cast<int64_t>(t.get<double>() * 1000));
  }

  if (root.contains("api_limits")) {
    const json& a = root["api_limits"];
    const std::string w = where + ".api_limits";
    only_keys(a, w, {"idle_timeout", "header_timeout", "body_timeout", "write_timeout", "handshake_timeout",
                     "max_connections"});
    auto seconds = [&](const char* key, std::chrono::milliseconds& out) {
      if (!a.contains(key)) return;
      if (!a[key].is_number() || a[key].get<double>() <= 0 || a[key].get<double>() > 3600)
        bad(w + "." + key, "must be a number of seconds, more than 0 and at most 3600");
      out = std::chrono::milliseconds(static_cast<int64_t>(a[key].get<double>() * 1000));
    };
    seconds("idle_timeout", config.api_limits.idle);
    seconds("header_timeout", config.api_limits.header);
    seconds("body_timeout", config.api_limits.body);
    seconds("write_timeout", config.api_limits.write);
    seconds("handshake_timeout", config.api_limits.handshake);
    get(a, "max_connections", config.api_limits.max_connections, w);
    if (config.api_limits.max_connections == 0 || config.api_limits.max_connections > 65536)
      bad(w + ".max_connections", "must be 1-65536");
  }
  if (root.contains("gateway")) {
    const json& g = root["gateway"];
    const std::string w = where + ".gateway";
    only_keys(g, w, {"control_socket", "nbd_socket", "socket_group", "start", "log_file", "check_interval",
                     "repair_interval"});
    get(g, "control_socket", config.gateway.control_socket, w);
    get(g, "nbd_socket", config.gateway.nbd_socket, w);
    get(g, "socket_group", config.gateway.socket_group, w);
    get(g, "start", config.gateway.start, w);
    get(g, "log_file", config.gateway.log_file, w);
    if (config.gateway.control_socket != "none")
      config.gateway.control_socket = resolve(config.gateway.control_socket, dir);
    config.gateway.nbd_socket = resolve(config.gateway.nbd_socket, dir);
    config.gateway.log_file = resolve(config.gateway.log_file, dir);
    auto seconds = [&](const char* key, std::chrono::milliseconds& out) {
      if (!g.contains(key)) return;
      if (!g[key].is_number() || g[key].get<double>() < 0.05 || g[key].get<double>() > 3600)
        bad(w + "." + key, "must be a number of seconds, from 0.05 to 3600");
      out = std::chrono::milliseconds(static_cast<int64_t>(g[key].get<double>() * 1000));
    };
    seconds("check_interval", config.gateway.check_interval);
    seconds("repair_interval", config.gateway.repair_interval);
  }
  if (root.contains("quotas")) {
    const json& q = root["quotas"];
    only_keys(q, where + ".quotas",
              {kQuotaVolumes, kQuotaSnapshots, kQuotaGigabytes, kQuotaBackups, kQuotaBackupGigabytes});
    for (const auto& [key, value] : q.items()) {
      if (!value.is_number_integer() || value.get<int64_t>() < -1) bad(where + ".quotas." + key, "must be an integer >= -1");
      config.default_quotas[key] = value.get<int64_t>();
    }
  }
  if (root.contains("backups")) {
    const json& b = root["backups"];
    const std::string w = where + ".backups";
    only_keys(b, w, {"kind", "directory", "zstd_level", "rados_pool", "ceph_conf", "ceph_client", "ceph_keyring"});
    get(b, "kind", config.backups.kind, w);
    get(b, "directory", config.backups.directory, w);
    get(b, "zstd_level", config.backups.zstd_level, w);
    get(b, "rados_pool", config.backups.rados_pool, w);
    get(b, "ceph_conf", config.backups.ceph_conf, w);
    get(b, "ceph_client", config.backups.ceph_client, w);
    get(b, "ceph_keyring", config.backups.ceph_keyring, w);
    if (!config.backups.directory.empty()) config.backups.directory = resolve(config.backups.directory, dir);
    if (!config.backups.ceph_conf.empty()) config.backups.ceph_conf = resolve(config.backups.ceph_conf, dir);
    if (!config.backups.ceph_keyring.empty()) config.backups.ceph_keyring = resolve(config.backups.ceph_keyring, dir);
  }
  if (root.contains("scheduler")) {
    const json& s = root["scheduler"];
    const std::string w = where + ".scheduler";
    only_keys(s, w, {"weighers", "capacity_weight_multiplier", "allocated_capacity_weight_multiplier",
                     "chance_weight_multiplier"});
    get(s, "weighers", config.scheduler.weighers, w);
    get(s, "capacity_weight_multiplier", config.scheduler.capacity_weight_multiplier, w);
    get(s, "allocated_capacity_weight_multiplier", config.scheduler.allocated_capacity_weight_multiplier, w);
    get(s, "chance_weight_multiplier", config.scheduler.chance_weight_multiplier, w);
  }
  if (root.contains("volume_types")) {
    const json& types = root["volume_types"];
    if (!types.is_object()) bad(where + ".volume_types", "expected an object of name: type");
    for (const auto& [name, t] : types.items()) {
      const std::string w = where + ".volume_types." + name;
      only_keys(t, w, {"description", "encrypted", "extra_specs"});
      VolumeType type{.name = name};
      get(t, "description", type.description, w);
      get(t, "encrypted", type.encrypted, w);
      get(t, "extra_specs", type.extra_specs, w);
      config.volume_types[name] = type;
    }
  }
  if (root.contains("pools")) {
    const json& pools = root["pools"];
    if (!pools.is_array()) bad(where + ".pools", "expected an array");
    for (const json& p : pools) {
      PoolConfig pool;
      get(p, "name", pool.name, where + ".pools");
      const std::string w = where + ".pools[" + pool.name + "]";
      only_keys(p, w, {"name", "driver", "directory", "availability_zone", "max_over_subscription_ratio",
                       "reserved_percentage", "thin_provisioning", "copy_bps_limit", "capabilities", "portals",
                       "iqn_prefix", "tgt_ipc_socket", "initiator_name", "initiator_addresses", "chap_user",
                       "chap_secret_file", "rbd_pool", "ceph_conf",
                       "ceph_client", "ceph_keyring", "total_capacity_gb"});
      get(p, "driver", pool.driver, w);
      get(p, "directory", pool.directory, w);
      if (!pool.directory.empty()) pool.directory = resolve(pool.directory, dir);
      get(p, "availability_zone", pool.availability_zone, w);
      get(p, "max_over_subscription_ratio", pool.max_over_subscription_ratio, w);
      get(p, "reserved_percentage", pool.reserved_percentage, w);
      get(p, "thin_provisioning", pool.thin_provisioning, w);
      get(p, "copy_bps_limit", pool.copy_bps_limit, w);
      get(p, "capabilities", pool.capabilities, w);
      get(p, "portals", pool.portals, w);
      get(p, "iqn_prefix", pool.iqn_prefix, w);
      get(p, "tgt_ipc_socket", pool.tgt_ipc_socket, w);
      get(p, "initiator_name", pool.initiator_name, w);
      get(p, "initiator_addresses", pool.initiator_addresses, w);
      get(p, "chap_user", pool.chap_user, w);
      get(p, "chap_secret_file", pool.chap_secret_file, w);
      pool.chap_secret_file = resolve(pool.chap_secret_file, dir);
      get(p, "rbd_pool", pool.rbd_pool, w);
      get(p, "ceph_conf", pool.ceph_conf, w);
      pool.ceph_conf = resolve(pool.ceph_conf, dir);
      get(p, "ceph_client", pool.ceph_client, w);
      get(p, "ceph_keyring", pool.ceph_keyring, w);
      pool.ceph_keyring = resolve(pool.ceph_keyring, dir);
      get(p, "total_capacity_gb", pool.total_capacity_gb, w);
      config.pools.push_back(pool);
    }
  } else {
    config.pools.push_back({.name = "default", .driver = "file", .directory = dir + "/pool"});
  }
  if (root.contains("luks")) {
    const json& l = root["luks"];
    const std::string w = where + ".luks";
    only_keys(l, w, {"type", "pbkdf", "iter_time_ms", "pbkdf_memory_kib", "pbkdf_iterations", "sector_size"});
    config.luks = {};
    get(l, "type", config.luks.type, w);
    get(l, "pbkdf", config.luks.pbkdf, w);
    get(l, "iter_time_ms", config.luks.iter_time_ms, w);
    get(l, "pbkdf_memory_kib", config.luks.pbkdf_memory_kib, w);
    get(l, "pbkdf_iterations", config.luks.pbkdf_iterations, w);
    get(l, "sector_size", config.luks.sector_size, w);
  }
  try {
    finish_config(config);
  } catch (const std::exception& e) {
    bad(where, e.what());
  }
  return config;
}

}  // namespace volgate::controller
