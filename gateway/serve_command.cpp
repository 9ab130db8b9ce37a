#include "gateway/serve_command.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdio>
#include <exception>
#include <thread>

#include "common/size.hpp"
#include "gateway/control_api.hpp"
#include "gateway/export_spec.hpp"
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

}  // namespace

CLI::App* add_serve_command(CLI::App& app, ServeOptions& options) {
  auto* serve = app.add_subcommand(
      "serve",
      "Serve volumes as NBD exports. Runs in the foreground, logs to stderr, prints one NBD URI\n"
      "per export and listener on stdout once listening. The first export is also the\n"
      "default export (the empty name). SIGINT/SIGTERM finish in-flight requests, flush, exit 0.\n"
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
  serve->add_option("--threads", options.threads, "Worker threads (default: one per core)")
      ->check(CLI::Range(1, 256));
  serve->add_option("--poll-max-us", options.poll_max_us,
                    "Longest a worker busy-polls for the next request before it sleeps, in\n"
                    "microseconds, while it serves file or memory exports (iSCSI and RBD never\n"
                    "poll). The window adapts to the traffic: it grows while requests come back\n"
                    "quickly and shrinks to zero on an idle connection. Polling saves the wake-up\n"
                    "that dominates latency at queue depth 1. 0 disables it.")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  return serve;
}

int run_serve(const ServeOptions& options) {
  nbd::ExportTable exports;
  std::vector<ExportSpec> specs;
  std::vector<HostPort> tcp;
  try {
    if (options.unix_paths.empty() && options.tcp_listens.empty())
      throw std::invalid_argument("nothing to listen on: give --unix PATH and/or --listen HOST:PORT");
    if (options.exports.empty() && options.control_path.empty())
      throw std::invalid_argument("nothing to serve: give --export SPEC, or --control PATH to add exports later");
    for (const auto& text : options.tcp_listens) tcp.push_back(parse_host_port(text));
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

  unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  std::optional<nbd::Server> server;
  std::optional<ControlApi> control;  // after the server: it goes first
  try {
    server.emplace(std::move(exports), threads, std::chrono::microseconds(options.poll_max_us));
    if (!options.control_path.empty()) control.emplace(*server, options.control_path, specs);
    for (const auto& path : options.unix_paths) server->listen_unix(path);
    for (const auto& hp : tcp) server->listen_tcp(hp.host, hp.port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate serve: %s\n", e.what());
    return 2;
  }

  for (const auto& e : *server->exports().all())
    spdlog::info("export '{}': {}, {}", e->name, e->device->description(), format_size(e->device->size()));
  spdlog::info("serving with {} worker thread{}", threads, threads == 1 ? "" : "s");
  for (const auto& uri : server->uris()) std::printf("%s\n", uri.c_str());
  std::fflush(stdout);

  if (control) control->start();
  bool flushed = server->run();
  if (control) control->shutdown();
  spdlog::info("stopped");
  return flushed ? 0 : 1;
}

}  // namespace volgate::gateway
