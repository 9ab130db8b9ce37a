#include "controller/cli/controller_command.hpp"

#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/metrics_http_server.hpp"
#include "common/process_metrics.hpp"
#include "controller/api/api_server.hpp"
#include "controller/compute/compute_service.hpp"
#include "controller/compute/domain_event_worker.hpp"
#include "controller/controller_config.hpp"
#include "controller/exports/gateway_exports.hpp"
#include "controller/exports/gateway_process.hpp"
#include "controller/exports/gateway_watch.hpp"
#include "controller/flows/test_fault_hook.hpp"
#include "controller/metrics/controller_metrics.hpp"
#include "controller/pools/file_pool.hpp"
#include "controller/pools/iscsi_pool.hpp"
#include "controller/pools/rbd_pool.hpp"
#include "controller/domain/key_wrap.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/virt/libvirt_driver.hpp"
#include "controller/api/volume_api.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {
namespace {

// Creates the token file with a random token when it does not exist yet.
void ensure_token_file(const std::string& path) {
  if (::access(path.c_str(), F_OK) == 0) return;
  unsigned char bits[24];
  if (RAND_bytes(bits, sizeof bits) != 1) throw std::runtime_error("no random bytes for the API token");
  std::string token;
  static const char* const kHex = "0123456789abcdef";
  for (unsigned char b : bits) {
    token += kHex[b >> 4];
    token += kHex[b & 15];
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "create token file " + path);
  bool written = ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size());
  ::close(fd);
  OPENSSL_cleanse(token.data(), token.size());
  OPENSSL_cleanse(bits, sizeof bits);
  if (!written) throw std::runtime_error("cannot write token file " + path);
  spdlog::info("created API token file {}", path);
}

// The token is the file's content without trailing whitespace, so `echo TOKEN > file` works.
crypto::SecureBytes read_token(const std::string& path) {
  auto token = crypto::read_key_file(path);
  size_t size = token.size();
  while (size > 0 && std::isspace(static_cast<unsigned char>(token.chars()[size - 1]))) --size;
  token.shrink(size);
  if (token.size() < 16) throw std::runtime_error("token file " + path + " must hold a token of 16 characters or more");
  return token;
}

// A secret file others can read is a secret no longer: say so (the controller keeps running,
// as sshd would not, because refusing would take every volume's API down over a chmod).
void warn_if_readable_by_others(const std::string& path, const char* what) {
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
    spdlog::warn("the {} file {} is readable or writable by others (mode {:04o}); chmod 600 it", what, path,
                 st.st_mode & 07777);
}

// Every token the API accepts, by digest: the operator's token_file (an admin of project
// "default") and the config's `tokens`. Token files are read, hashed and wiped here.
TokenTable api_tokens(const ControllerConfig& config) {
  TokenTable table;
  auto add_file = [&](const std::string& path, Caller caller) {
    warn_if_readable_by_others(path, "API token");
    crypto::SecureBytes token = read_token(path);
    table.add(TokenTable::digest_of(std::string_view(token.chars(), token.size())), std::move(caller));
  };
  try {
    add_file(config.token_file, {.project = "default", .role = Role::admin});
    for (const auto& t : config.tokens) {
      Caller caller{.project = t.project, .role = t.role};
      if (!t.token_file.empty()) add_file(t.token_file, std::move(caller));
      else table.add(*TokenTable::digest_from_hex(t.token_sha256), std::move(caller));
    }
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("tokens: ") + e.what());
  }
  return table;
}

// Whether HOST:PORT names a loopback address (127.0.0.0/8, ::1), where plain HTTP stays on the
// host. A name or a malformed address is not.
bool is_loopback(const std::string& host_port) {
  std::string host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

// Each API connection is a descriptor: allow as many as the hard limit permits.
void raise_descriptor_limit() {
  struct rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// The gateway's sockets live in a directory of their own that QEMU (another user) must be able
// to enter: the state directory and that directory are made traversable (0711: their files stay
// 0600 and their listings private; the NBD socket itself is 0660 for the socket group).
void prepare_socket_directory(const GatewayConfig& gateway, const std::string& state_dir) {
  if (gateway.control_socket.empty()) return;
  for (const auto& socket : {gateway.control_socket, gateway.nbd_socket}) {
    const auto dir = std::filesystem::path(socket).parent_path();
    std::error_code ec;
    if (std::filesystem::create_directories(dir, ec) && dir.string().starts_with(state_dir)) ::chmod(dir.c_str(), 0711);
    if (ec) throw std::runtime_error("gateway socket directory " + dir.string() + ": " + ec.message());
  }
  ::chmod(state_dir.c_str(), 0711);
}

// QEMU runs as another user (libvirt-qemu): an NBD socket it cannot reach fails every attach
// with libvirt's bare "Failed to attach device". Say so at start, naming the directory to fix.
void warn_if_qemu_cannot_reach(const GatewayConfig& gateway) {
  if (gateway.nbd_socket.empty()) return;
  if (gateway.socket_group.empty()) {
    spdlog::warn("the NBD socket {} gets no group QEMU runs in (libvirt-qemu is missing, or this user may not "
                 "give it: set gateway.socket_group): a QEMU running as another user cannot attach volumes",
                 gateway.nbd_socket);
    return;
  }
  const struct group* g = ::getgrnam(gateway.socket_group.c_str());
  for (auto dir = std::filesystem::path(gateway.nbd_socket).parent_path(); !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path()) {
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) continue;
    const bool reachable = (st.st_mode & S_IXOTH) || (g && st.st_gid == g->gr_gid && (st.st_mode & S_IXGRP));
    if (!reachable) {
      spdlog::warn("QEMU (group {}) cannot reach the NBD socket {}: {} is mode {:04o}; chmod o+x it, or put the "
                   "state directory elsewhere", gateway.socket_group, gateway.nbd_socket, dir.string(),
                   st.st_mode & 07777);
      return;
    }
  }
}

}  // namespace

CLI::App* add_controller_command(CLI::App& app, ControllerOptions& options) {
  auto* cmd = app.add_subcommand(
      "controller",
      "Run the volume service (what Cinder does): volumes and snapshots in pools, quotas, a scheduler,\n"
      "state in SQLite, a REST API shaped like Cinder's v3 on a unix socket (mode 0600) and/or TCP,\n"
      "protected by tokens, each acting in its project as a member or an admin (the config's tokens;\n"
      "the token file is an admin's). With only --state-dir, everything lives in that directory:\n"
      "the database, one file pool (DIR/pool), the socket DIR/controller.sock, the admin token\n"
      "DIR/token and the master key DIR/master.key (both generated on first start).\n"
      "Attached volumes are served by the gateway on the control socket DIR/run/gateway.sock (NBD on\n"
      "DIR/run/nbd.sock); with --gateway the controller starts that gateway itself when none answers.");
  cmd->add_option("--config", options.config_file, "JSON config file (see README, section Controller)")
      ->type_name("PATH");
  cmd->add_option("--state-dir", options.state_dir, "Directory for the database, sockets and default pool")
      ->type_name("DIR");
  cmd->add_option("--listen", options.tcp_listen,
                  "Also serve the API on TCP HOST:PORT: HTTPS with --tls-certificates, plain HTTP only\n"
                  "on a loopback address (the config's tcp_listen)")
      ->type_name("HOST:PORT");
  cmd->add_option("--tls-certificates", options.tls_certificates,
                  "Serve the TCP listener over HTTPS with the x509 certificates in DIR: server-cert.pem,\n"
                  "server-key.pem (and ca-cert.pem), as for volgate serve (the config's tls_certificates)")
      ->type_name("DIR");
  cmd->add_flag("--gateway", options.start_gateway,
                "Start the gateway (volgate serve --control) that serves attached volumes when none answers on\n"
                "its control socket, and again whenever it dies. It outlives a controller stop while it serves\n"
                "exports (guests keep their disks); one that serves none stops with the controller.");
  cmd->add_option("--metrics", options.metrics,
                  "Serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT is 127.0.0.1:PORT):\n"
                  "volumes and attachments by status, flows by kind, API requests by route and status,\n"
                  "export repairs (see README, \"Metrics\"). Its URL is printed after the API's. Overrides\n"
                  "the config's \"metrics\"")
      ->type_name("[HOST:]PORT");
  return cmd;
}

int run_controller(const ControllerOptions& options) {
  ControllerConfig config;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> service;
  std::unique_ptr<GatewayExports> gateway;
  std::unique_ptr<GatewayProcess> gateway_process;
  std::unique_ptr<GatewayWatch> gateway_watch;
  std::unique_ptr<Hypervisor> hypervisor;
  std::unique_ptr<ComputeService> compute;
  std::unique_ptr<DomainEventWorker> domain_events;
  std::unique_ptr<VolumeApi> api;
  std::unique_ptr<ApiServer> server;
  std::unique_ptr<MetricsHttpServer> metrics;  // after the store and service its scrapes read
  std::vector<std::string> listening;
  int lock_fd = -1;  // held until the process exits
  // The database holds wrapped keys and the state directory the token: owner only.
  ::umask(077);
  try {
    if (options.config_file.empty() && options.state_dir.empty())
      throw std::invalid_argument("give --state-dir DIR (embedded default config) or --config PATH");
    config = options.config_file.empty() ? default_config(std::filesystem::absolute(options.state_dir))
                                         : load_config(options.config_file, options.state_dir.empty()
                                                                                ? std::string()
                                                                                : std::filesystem::absolute(
                                                                                      options.state_dir).string());
    if (!options.tcp_listen.empty()) config.tcp_listen = options.tcp_listen;
    std::optional<boost::asio::ip::tcp::endpoint> metrics_endpoint;
    if (!options.metrics.empty()) metrics_endpoint = parse_metrics_address(options.metrics, "--metrics");
    else if (!config.metrics.empty()) metrics_endpoint = parse_metrics_address(config.metrics, "metrics");
    if (!options.tls_certificates.empty()) config.tls_certificates = std::filesystem::absolute(options.tls_certificates);
    // Refused before anything else happens: a token in clear on the network is not a choice
    // the operator should discover in a log line.
    std::shared_ptr<const crypto::TlsServerCredentials> tls;
    if (!config.tls_certificates.empty()) {
      if (config.tcp_listen.empty())
        throw std::invalid_argument("tls_certificates " + config.tls_certificates + ": there is no TCP listener (--listen) to serve HTTPS on");
      tls = crypto::TlsServerCredentials::load({.certificates_dir = config.tls_certificates});
    } else if (!config.tcp_listen.empty() && !is_loopback(config.tcp_listen)) {
      throw std::invalid_argument("--listen " + config.tcp_listen +
                                  ": plain HTTP only on a loopback address; give --tls-certificates DIR for HTTPS");
    }
    if (options.start_gateway) {
      if (config.gateway.control_socket.empty())
        throw std::invalid_argument("--gateway: the config's gateway.control_socket is none");
      config.gateway.start = true;
    }
    std::error_code ec;
    std::filesystem::create_directories(config.state_dir, ec);
    if (ec) throw std::runtime_error("state directory " + config.state_dir + ": " + ec.message());
    ::chmod(config.state_dir.c_str(), 0700);
    prepare_socket_directory(config.gateway, config.state_dir);
    // One controller per state: a second one would take the first one's running flows for
    // half-done ones and revert them. The lock goes when the process does, however it ends.
    const std::string lock_path = config.state_dir + "/controller.lock";
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0) throw std::system_error(errno, std::generic_category(), "lock file " + lock_path);
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
      throw std::runtime_error("another controller is running on " + config.state_dir);
    // Only now: a start refused above says one thing, its reason.
    warn_if_qemu_cannot_reach(config.gateway);

    // This process holds the master key: keep it out of core dumps.
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    raise_descriptor_limit();
    ensure_token_file(config.token_file);
    TokenTable tokens = api_tokens(config);
    if (::access(config.master_key_file.c_str(), F_OK) != 0) {
      KeyWrap::create_key_file(config.master_key_file);
      spdlog::info("created master key file {}", config.master_key_file);
    }
    warn_if_readable_by_others(config.master_key_file, "master key");
    std::optional<KeyWrap> key_wrap(KeyWrap::from_file(config.master_key_file));

    store = std::make_unique<SqliteStore>(config.database);
    std::vector<std::unique_ptr<Pool>> pools;
    for (const auto& pool_config : config.pools) {
      if (pool_config.driver == "iscsi")
        pools.push_back(std::make_unique<IscsiPool>(pool_config));
      else if (pool_config.driver == "rbd")
        pools.push_back(std::make_unique<RbdPool>(pool_config));
      else
        pools.push_back(std::make_unique<FilePool>(pool_config));
    }
    // Tests only (VOLGATE_TEST_KILL_BEFORE / _STALL_BEFORE); unset in production: no hook.
    const BeforeTask test_fault = test_fault_hook_from_environment();
    service = std::make_unique<VolumeService>(config, *store, std::move(pools), std::move(key_wrap),
                                              ServiceOptions{.before_task = test_fault});
    if (!config.gateway.control_socket.empty()) {
      gateway = std::make_unique<GatewayControlExports>(config.gateway.control_socket, config.gateway.nbd_socket);
      service->set_gateway(gateway.get());
      if (config.gateway.start) gateway_process = std::make_unique<GatewayProcess>(config.gateway);
    }
    hypervisor = std::make_unique<Hypervisor>(config.libvirt_uri,
                                              [detach = config.libvirt_detach,
                                               reconnect = config.nbd_reconnect_delay](const std::string& uri) {
                                                return std::make_unique<LibvirtDriver>(uri, detach, reconnect);
                                              });
    compute = std::make_unique<ComputeService>(*store, *service, *hypervisor, test_fault,
                                               ComputeOptions{.shutdown_timeout = config.server_shutdown_timeout,
                                                              .cross_az_attach = config.cross_az_attach});
    service->recover(ComputeService::flow_kinds());
    // After the volume flows: an attach being undone deletes its attachment, which needs its
    // volume settled. Without libvirt the compute flows wait in the journal for a start with it.
    if (!config.libvirt_uri.empty()) compute->recover();

    api = std::make_unique<VolumeApi>(*service, hypervisor.get(), compute.get());
    server = std::make_unique<ApiServer>(*api, std::move(tokens), 2, config.api_limits);
    if (!config.unix_socket.empty()) {
      server->listen_unix(config.unix_socket);
      listening.push_back("unix:" + config.unix_socket);
    }
    if (!config.tcp_listen.empty()) {
      std::string host = config.tcp_listen.substr(0, config.tcp_listen.rfind(':'));
      uint16_t port = server->listen_tcp(config.tcp_listen, tls);
      listening.push_back((tls ? "https://" : "http://") + host + ":" + std::to_string(port));
      if (tls) spdlog::info("the API on {} is HTTPS: {}", config.tcp_listen, tls->description());
    }
    if (metrics_endpoint) {
      metrics = std::make_unique<MetricsHttpServer>(*metrics_endpoint, [&store] {
        MetricsReport report;
        ControllerMetrics::process().report(report);
        report_store_metrics(*store, report);
        report_process_metrics(report);
        return report.text();
      });
      listening.push_back("http://" + metrics->address() + "/metrics");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate controller: %s\n", e.what());
    return 2;
  }

  // Destroyed before the server whose io_context it uses.
  auto signals = std::make_unique<boost::asio::signal_set>(server->io_context(), SIGINT, SIGTERM);
  signals->async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal {}: stopping", signal);
    server->stop();
  });
  for (const auto& p : config.pools)
    spdlog::info("pool {}: {} {} (zone {})", p.name, p.driver, p.driver == "rbd" ? p.rbd_pool : p.directory,
                 p.availability_zone);
  spdlog::info("database {} (schema version {}, journal {})", config.database, store->schema_version(),
               store->journal_mode());
  for (const auto& url : listening) std::printf("%s\n", url.c_str());
  std::fflush(stdout);

  if (gateway) {
    GatewayWatch::Actions actions{.reconcile = [&] {
      auto repairs = service->reconcile_exports();
      if (repairs.added || repairs.removed || repairs.failed)
        spdlog::info("export check: {} served again, {} removed, {} failed", repairs.added, repairs.removed,
                     repairs.failed);
    }};
    if (gateway_process) actions.unreachable = [&] { gateway_process->start(); };
    gateway_watch = std::make_unique<GatewayWatch>(*gateway, std::move(actions), config.gateway.check_interval,
                                                   config.gateway.repair_interval);
    gateway_watch->start();
  }
  // After recovery and with the gateway watched: releasing a volume deletes its attachment.
  if (!config.libvirt_uri.empty()) {
    domain_events = std::make_unique<DomainEventWorker>(*compute, *hypervisor);
    domain_events->start();
  }

  if (metrics) metrics->start();
  server->run();
  if (metrics) metrics->stop();
  if (domain_events) domain_events->stop();
  if (gateway_watch) gateway_watch->stop();
  service->stop();
  if (gateway_process) {
    try {
      gateway_process->stop_if_idle(gateway::GatewayControlClient(config.gateway.control_socket).health());
    } catch (const std::exception&) {
      // No gateway answers: nothing to stop.
    }
  }
  signals.reset();
  server.reset();
  api.reset();
  domain_events.reset();
  compute.reset();  // waits for the stops still running, which use the hypervisor
  hypervisor.reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace volgate::controller
