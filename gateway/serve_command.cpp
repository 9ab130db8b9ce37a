#include "gateway/serve_command.hpp"

#include <grp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "common/metrics_http_server.hpp"
#include "common/process_metrics.hpp"
#include "common/size.hpp"
#include "crypto/xts_provider.hpp"
#include "gateway/control_api.hpp"
#include "gateway/export_spec.hpp"
#include "gateway/fuse_front_end.hpp"
#include "gateway/fuse_mount_point.hpp"
#include "gateway/handover_successor.hpp"
#include "gateway/serve_process.hpp"
#include "gateway/service_manager.hpp"
#include "gateway/unlocked_device.hpp"
#include "nbd/server.hpp"

namespace volgate::gateway {
namespace {

struct HostPort {
  std::string host;
  uint16_t port;
};

HostPort parse_host_port(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw std::invalid_argument("--listen '" + text + "': expected HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string_view port_text(text.data() + colon + 1, text.size() - colon - 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535)
    throw std::invalid_argument("--listen '" + text + "': port must be a number 0-65535");
  return {host, static_cast<uint16_t>(port)};
}

// A group name from /etc/group (or NSS), or a numeric id as chgrp takes it.
gid_t resolve_group(const std::string& name) {
  group entry{};
  group* found = nullptr;
  std::vector<char> buffer(16 * 1024);
  int err = ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (err == 0 && found) return found->gr_gid;
  unsigned id = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (!name.empty() && ec == std::errc() && end == name.data() + name.size()) return id;
  throw std::invalid_argument("--socket-group '" + name + "': no such group" +
                              (err ? std::string(" (") + std::strerror(err) + ")" : ""));
}

}  // namespace

CLI::App* add_serve_command(CLI::App& app, ServeOptions& options) {
  auto* serve = app.add_subcommand(
      "serve",
      "Serve volumes as NBD exports. Runs in the foreground, logs to stderr, prints one NBD URI\n"
      "per export and listener on stdout once listening. The first export is also the\n"
      "default export (the empty name). SIGINT/SIGTERM finish in-flight requests, flush, exit 0\n"
      "(1 if a flush failed, or the storage did not answer it within 15 s or left requests\n"
      "unanswered 3 s after the 10 s drain: a stop takes 28 s at worst).\n"
      "With --control, exports can be added and removed while serving (see README, \"Gateway\n"
      "control API\"); --export is then optional.");
  serve->add_option("--unix", options.unix_paths, "Listen on a unix socket at PATH (repeatable)")
      ->type_name("PATH");
  serve->add_option("--listen", options.tcp_listens,
                    "Listen on TCP HOST:PORT, e.g. 127.0.0.1:10809 or [::1]:10809 (repeatable)")
      ->type_name("HOST:PORT");
  serve->add_option("--export", options.exports, kExportSyntaxHelp)
      ->type_name("SPEC");
  serve->add_option("--control", options.control_path,
                    "Serve the control API (HTTP/JSON: add, remove and list exports while serving)\n"
                    "on a unix socket at PATH, created 0600; only its owner and root may use it.\n"
                    "Keys of encrypted exports travel only in its request bodies.")
      ->type_name("PATH");
  serve->add_option("--fuse", options.fuse_dir,
                    "Also show every export as a regular file DIR/NAME of the export's size (FUSE;\n"
                    "DIR must be an existing directory). Reads and writes at any offset, fsync,\n"
                    "fallocate punch-hole/zero-range and SEEK_DATA/SEEK_HOLE reach the same device\n"
                    "as NBD clients do, without a page cache. A mount left by a volgate that died\n"
                    "is detached first. With --fuse, --unix and --listen are optional.")
      ->type_name("DIR");
  serve->add_option("--fuse-threads", options.fuse_threads,
                    "Threads serving the --fuse mount, each with its own descriptor of it and its\n"
                    "own share of the requests in flight (default: min(4, cores)); the NBD\n"
                    "workers of --threads are others")
      ->type_name("N")
      ->check(CLI::Range(1u, FuseFrontEnd::kMaxThreads));
  serve->add_option("--metrics", options.metrics,
                    "Serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT is\n"
                    "127.0.0.1:PORT): per export requests, bytes, errors, latency, connections;\n"
                    "iSCSI paths, LUKS cipher bytes, the process and its workers (see README,\n"
                    "\"Metrics\"). Its URL is printed after the NBD URIs")
      ->type_name("[HOST:]PORT");
  serve->add_option("--threads", options.threads, "Worker threads (default: one per core)")
      ->check(CLI::Range(1, 256));
  serve->add_option("--poll-max-us", options.poll_max_us,
                    "Longest a worker busy-polls for the next request before it sleeps, in\n"
                    "microseconds, while it serves file or memory exports (iSCSI and RBD never\n"
                    "poll). The window adapts to the traffic: it grows while requests come back\n"
                    "quickly and shrinks to zero on an idle connection. Polling saves the wake-up\n"
                    "that dominates latency at queue depth 1. 0 disables it.")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000))
      ->each([&options](const std::string&) { options.poll_max_us_given = true; });
  serve->add_option("--socket-group", options.socket_group,
                    "Give the --unix sockets to this group with mode 0660, e.g. libvirt-qemu so\n"
                    "that QEMU run by libvirt can connect (default: mode 0600, this user only)")
      ->type_name("NAME");
  serve->add_option("--max-connections", options.max_connections,
                    "Connections open at once, handshakes included; one more is closed as soon\n"
                    "as it is accepted")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  serve->add_option("--max-buffer-bytes", options.max_buffer_bytes,
                    "Bytes of requests and replies (WRITE payloads, READ data) all connections\n"
                    "may hold in memory together; past it, connections stop reading requests\n"
                    "until bytes come back. A connection holding none may still take one request\n"
                    "(up to 32 MiB) past it, so none can be starved. SIZE as for memory:SIZE")
      ->type_name("SIZE")
      ->capture_default_str();
  serve->add_option("--handshake-timeout", options.handshake_timeout_s,
                    "Seconds a client may take from connecting to the end of the NBD handshake\n"
                    "before its connection is closed")
      ->type_name("SECONDS")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  serve->add_option("--tls", options.tls.mode,
                    "NBD over TLS (NBD_OPT_STARTTLS): off; on (clients choose TLS or clear text);\n"
                    "require (every option but STARTTLS is refused before TLS, nothing is listed\n"
                    "in clear). on and require need --tls-certificates or --tls-psk")
      ->type_name("off|on|require")
      ->capture_default_str();
  serve->add_option("--tls-certificates", options.tls.certificates_dir,
                    "x509 credentials: DIR holds server-cert.pem, server-key.pem and, to verify\n"
                    "clients, ca-cert.pem (and ca-crl.pem if any), as for QEMU and nbdkit")
      ->type_name("DIR");
  serve->add_option("--tls-psk", options.tls.psk_file,
                    "Pre-shared keys instead of certificates: FILE of IDENTITY:HEXKEY lines\n"
                    "(nbdkit's and QEMU's keys.psk format, e.g. from psktool); keep it mode 0600")
      ->type_name("FILE");
  serve->add_flag("--tls-verify-peer", options.tls.verify_peer,
                  "With --tls-certificates: clients must show a certificate signed by ca-cert.pem");
  serve->add_option("--xts-provider", options.xts_provider,
                    "Which AES-XTS implementation encrypts LUKS exports: openssl, gcrypt\n"
                    "(libgcrypt, whose VAES path is faster on cores that have it), or auto: the\n"
                    "fastest of those that give the known answers (IEEE 1619 vectors and 4 KiB\n"
                    "units), measured when the first LUKS export opens and logged. A provider\n"
                    "that answers wrongly is never used; if it is the one named here, volgate\n"
                    "serve exits 1")
      ->type_name("auto|openssl|gcrypt")
      ->check(CLI::IsMember({"auto", "openssl", "gcrypt"}))
      ->capture_default_str();
  auto* take_over = serve->add_option(
      "--take-over", options.take_over,
      "Take over from the gateway serving the control socket at PATH, with no client\n"
      "noticing more than a pause: its listeners, control socket, metrics endpoint, exports\n"
      "(LUKS ones by their volume keys) and every NBD connection move to this process, which\n"
      "may be a newer volgate; the other one exits 0. If anything fails before this process\n"
      "has everything, the other serves on and this one exits 1. TLS connections are closed\n"
      "(clients reconnect). Only --threads, --poll-max-us and --xts-provider may be given\n"
      "with it; the rest comes from the running gateway. `volgate gateway restart` runs\n"
      "this in the background.")
      ->type_name("PATH");
  // Checked here rather than with CLI11's excludes(), which would print a note under every
  // other option in --help.
  serve->parse_complete_callback([serve, take_over] {
    if (!take_over->count()) return;
    for (const CLI::Option* option : serve->get_options())
      if (option != take_over && option->count() && option->get_name() != "--threads" &&
          option->get_name() != "--poll-max-us" && option->get_name() != "--xts-provider")
        throw CLI::ValidationError(option->get_name(), "comes from the running gateway with --take-over (only "
                                                       "--threads, --poll-max-us and --xts-provider may be "
                                                       "given with it)");
  });
  return serve;
}

namespace {

// Everything one `volgate serve` process runs. Members go in reverse order: the metrics first
// (their scrapes read the server), the control API (it drives the server), FUSE, the server.
struct Serving {
  std::optional<nbd::Server> server;
  std::optional<FuseFrontEnd> fuse;
  std::optional<ControlApi> control;
  std::optional<MetricsHttpServer> metrics;
  std::string fuse_dir;  // absolute; empty without --fuse
};

MetricsHttpServer::Collect collect_metrics(Serving& serving) {
  return [&serving] {
    MetricsReport report;
    serving.server->report_metrics(report);
    report_process_metrics(report);
    return report.text();
  };
}

// Each socket file is one listener's: a second one on the same path would find the first
// listening there and report "another gateway", which would send the operator looking for a
// process that does not exist.
void check_socket_paths_distinct(const ServeOptions& options) {
  // Resolved as far as this user may look (a directory it cannot search is compared by name,
  // and refused later, by the listener, with its own message).
  auto same_file_name = [](const std::string& path) {
    std::error_code ec;
    std::filesystem::path resolved = std::filesystem::weakly_canonical(path, ec);
    return ec ? std::filesystem::absolute(path, ec).lexically_normal() : resolved;
  };
  std::set<std::filesystem::path> unix_sockets;
  for (const auto& path : options.unix_paths)
    if (!unix_sockets.insert(same_file_name(path)).second)
      throw std::invalid_argument("--unix " + path + " is given twice");
  if (!options.control_path.empty() && unix_sockets.contains(same_file_name(options.control_path)))
    throw std::invalid_argument("--control " + options.control_path +
                                " is also a --unix socket: the control socket needs a path of its own");
}

nbd::ServerLimits limits_of(const ServeOptions& options) {
  nbd::ServerLimits limits;
  auto buffer_bytes = parse_size(options.max_buffer_bytes);
  if (!buffer_bytes || *buffer_bytes < (uint64_t{1} << 20))
    throw std::invalid_argument("--max-buffer-bytes '" + options.max_buffer_bytes +
                                "': expected a size of at least 1M");
  limits.max_buffer_bytes = *buffer_bytes;
  limits.max_connections = options.max_connections;
  limits.handshake_timeout = std::chrono::seconds(options.handshake_timeout_s);
  return limits;
}

unsigned thread_count(const ServeOptions& options) {
  return options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
}

// From the moment everything listens to the end: what `volgate serve` prints, the log lines
// that describe it, and the run until a stop (or a hand-over to a successor).
int serve_until_stopped(Serving& s, const ServeOptions& options, const nbd::ServerLimits& limits,
                        const nbd::ServerTls& tls, rlim_t open_files) {
  if (s.fuse) s.server->on_stop([&fuse = s.fuse] { fuse->stop(); });

  for (const auto& e : *s.server->exports().all())
    spdlog::info("export '{}': {}, {}", e->name, e->device->description(), format_size(e->device->size()));
  const unsigned threads = thread_count(options);
  spdlog::info("serving with {} worker thread{}; at most {} connections, {} of buffers, {} s to "
               "handshake",
               threads, threads == 1 ? "" : "s", limits.max_connections,
               format_size(limits.max_buffer_bytes), limits.handshake_timeout.count() / 1000);
  if (tls.credentials)
    spdlog::info("TLS {}: {}", options.tls.mode == "require" ? "required" : "offered",
                 tls.credentials->description());
  if (open_files < limits.max_connections + 64)
    spdlog::warn("only {} descriptors may be open (RLIMIT_NOFILE), fewer than --max-connections "
                 "{} needs: accepting will pause when they run out",
                 open_files, limits.max_connections);
  for (const auto& uri : s.server->uris()) std::printf("%s\n", uri.c_str());
  if (s.metrics) std::printf("http://%s/metrics\n", s.metrics->address().c_str());
  if (s.fuse)
    for (const auto& e : *s.server->exports().all()) std::printf("%s/%s\n", s.fuse_dir.c_str(), e->name.c_str());
  std::fflush(stdout);

  if (s.fuse) s.fuse->start();
  if (s.control) s.control->start();
  if (s.metrics) {
    s.metrics->start();
    spdlog::info("metrics at http://{}/metrics", s.metrics->address());
  }
  notify_ready();
  bool flushed = s.server->run();
  if (s.metrics) s.metrics->stop();
  // The FUSE stop began with the server's; it has its own last flush of what the files wrote.
  if (s.fuse && !s.fuse->wait()) flushed = false;
  if (s.control) s.control->shutdown();
  if (s.server->storage_unanswered() || (s.fuse && s.fuse->storage_unanswered())) {
    // Closing a device whose storage does not answer (librbd's close waits for the requests
    // it holds) would hold the stop until systemd kills the process, and worker threads may
    // still wait for it; what those requests carry is lost either way, and the log says which
    // exports.
    spdlog::error("stopped without closing the exports whose storage did not answer");
    s.server->remove_socket_files();
    spdlog::default_logger()->flush();
    std::fflush(nullptr);
    std::_Exit(1);
  }
  spdlog::info("stopped");
  return flushed ? 0 : 1;
}

// `volgate serve --take-over PATH`: everything comes from the gateway serving PATH.
int run_take_over(const ServeOptions& given, rlim_t open_files) {
  std::optional<HandoverSuccessor> successor;
  try {
    successor.emplace(given.take_over);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: %s\n", e.what());
    return 1;
  }
  handover::State& state = successor->state();
  ServeOptions options = given;
  const handover::Settings& inherited = state.settings;
  if (!given.threads) options.threads = inherited.threads;
  if (!given.poll_max_us_given) options.poll_max_us = inherited.poll_max_us;
  options.max_connections = inherited.max_connections;
  options.max_buffer_bytes = inherited.max_buffer_bytes;
  options.handshake_timeout_s = inherited.handshake_timeout_s;
  options.tls = inherited.tls;
  options.control_path.clear();

  Serving s;
  nbd::ServerLimits limits;
  nbd::ServerTls tls;
  try {
    limits = limits_of(options);
    tls = load_server_tls(options.tls);
    nbd::ExportTable exports;
    for (auto& d : state.exports) {
      d.target.iscsi.take_over = true;  // the predecessor's sessions serve until the commit
      try {
        auto device = open_unlocked(d.target, d.luks);
        std::string description = device->description();
        exports.add({d.name, description, std::move(device)});
      } catch (const std::exception& e) {
        throw std::runtime_error("export '" + d.name + "': " + e.what());
      }
    }
    s.server.emplace(std::move(exports), thread_count(options), std::chrono::microseconds(options.poll_max_us),
                     limits, tls);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: cannot take over: %s\n", e.what());
    successor->abort(e.what());
    return 1;
  }
  // The listening sockets stay bare descriptors until the commit: a server or control API made
  // of them would remove their socket files when this process gives up, and the predecessor,
  // serving on, would be left without them.
  std::vector<UniqueFd> nbd_listeners = successor->take_nbd_listeners();
  UniqueFd control_listener = successor->take_control_listener();
  UniqueFd metrics_listener = successor->take_metrics_listener();

  std::vector<nbd::PausedConnection> connections;
  try {
    connections = successor->take_connections();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: cannot take over: %s\n", e.what());
    return 1;
  }
  try {
    for (auto& fd : nbd_listeners) s.server->adopt_listener(fd.release());
    s.control.emplace(*s.server, std::move(control_listener), state.exports);
    if (metrics_listener) {
      s.server->measure_latency(true);
      s.metrics.emplace(metrics_listener.release(), collect_metrics(s));
    }
    s.control->enable_handover(handover::settings_of(options), s.metrics ? s.metrics->listening_descriptor() : -1, "");
  } catch (const std::exception& e) {
    // Committed, so nobody else serves: nothing to give back. Only descriptors that are not
    // what the state says (a predecessor sending garbage) end up here.
    std::fprintf(stderr, "volgate serve: the hand-over committed, but serving failed: %s\n", e.what());
    return 1;
  }
  // Before the first request: it may go to the storage as soon as a connection is adopted.
  for (const auto& e : *s.server->exports().all()) e->device->handover_committed(true);
  size_t adopted = 0;
  for (auto& c : connections) adopted += s.server->adopt_connection(std::move(c));
  spdlog::info("took over from pid {}: {} export{}, {} connection{}", successor->predecessor(),
               state.exports.size(), state.exports.size() == 1 ? "" : "s", adopted, adopted == 1 ? "" : "s");
  successor.reset();  // the channel closes: the predecessor is on its way out
  return serve_until_stopped(s, options, limits, tls, open_files);
}

}  // namespace

int run_serve(const ServeOptions& options) {
  // Always, before any export is opened: which exports hold secrets is not the only question
  // (LUKS keys, CHAP secrets, the cephx key librados reads from a keyring; some of them sit in
  // libraries' ordinary memory), the buffers hold guest data, plaintext for LUKS exports, and
  // a dump of either must never land in a file other users or crash reporters can read.
  try {
    make_undumpable();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: %s\n", e.what());
    return 1;
  }
  // A provider named on the command line is proven now, so that one with a wrong answer stops
  // the start; auto chooses when the first LUKS export opens (plain gateways never pay for it).
  if (auto forced = crypto::parse_xts_provider(options.xts_provider)) {
    try {
      crypto::select_xts_provider(forced);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "volgate serve: %s\n", e.what());
      return 1;
    }
  }
  const rlim_t open_files = raise_open_file_limit();
  if (!options.take_over.empty()) return run_take_over(options, open_files);

  nbd::ExportTable exports;
  std::vector<ExportSpec> specs;
  std::vector<HostPort> tcp;
  nbd::ServerLimits limits;
  nbd::ServerTls tls;
  std::optional<gid_t> socket_group;
  Serving s;
  std::optional<boost::asio::ip::tcp::endpoint> metrics_endpoint;
  try {
    if (!options.metrics.empty()) metrics_endpoint = parse_metrics_address(options.metrics, "--metrics");
    if (options.unix_paths.empty() && options.tcp_listens.empty() && options.fuse_dir.empty())
      throw std::invalid_argument("nothing to listen on: give --unix PATH, --listen HOST:PORT and/or --fuse DIR");
    if (!options.fuse_dir.empty()) s.fuse_dir = prepare_fuse_mount_point(options.fuse_dir);
    if (options.exports.empty() && options.control_path.empty())
      throw std::invalid_argument("nothing to serve: give --export SPEC, or --control PATH to add exports later");
    for (const auto& text : options.tcp_listens) tcp.push_back(parse_host_port(text));
    if (!options.socket_group.empty()) {
      if (options.unix_paths.empty()) throw std::invalid_argument("--socket-group needs a --unix socket");
      socket_group = resolve_group(options.socket_group);
    }
    check_socket_paths_distinct(options);
    limits = limits_of(options);
    tls = load_server_tls(options.tls);
    for (const auto& text : options.exports) {
      ExportSpec spec = parse_export_spec(text);
      std::shared_ptr<backends::BlockDevice> device;
      try {
        device = open_device(spec);
      } catch (const std::exception& e) {
        throw std::runtime_error("export '" + spec.name + "': " + e.what());
      }
      std::string description = device->description();
      exports.add({spec.name, description, std::move(device)});
      specs.push_back(std::move(spec));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: %s\n", e.what());
    return 2;
  }

  try {
    s.server.emplace(std::move(exports), thread_count(options), std::chrono::microseconds(options.poll_max_us),
                     limits, tls);
    if (metrics_endpoint) {
      s.server->measure_latency(true);
      s.metrics.emplace(*metrics_endpoint, collect_metrics(s));
    }
    for (const auto& path : options.unix_paths) s.server->listen_unix(path, socket_group);
    for (const auto& hp : tcp) s.server->listen_tcp(hp.host, hp.port);
    if (!s.fuse_dir.empty())
      s.fuse.emplace(s.server->exports(), s.fuse_dir,
                     options.fuse_threads ? options.fuse_threads : FuseFrontEnd::default_threads());
    if (!options.control_path.empty()) {
      s.control.emplace(*s.server, options.control_path, specs, s.fuse ? &*s.fuse : nullptr);
      s.control->enable_handover(handover::settings_of(options), s.metrics ? s.metrics->listening_descriptor() : -1,
                                 s.fuse ? "this gateway serves --fuse: its mount cannot move to another process"
                                        : "");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: %s\n", e.what());
    return 2;
  }
  return serve_until_stopped(s, options, limits, tls, open_files);
}

}  // namespace volgate::gateway
