#pragma once
// `volgate serve`: serve volumes as NBD exports until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "gateway/tls_options.hpp"
#include "nbd/server.hpp"

namespace volgate::gateway {

struct ServeOptions {
  std::vector<std::string> unix_paths;
  std::vector<std::string> tcp_listens;  // HOST:PORT
  std::vector<std::string> exports;      // NAME=BACKEND[,OPTION...]
  std::string control_path;              // the control API's unix socket; empty: none
  std::string fuse_dir;                  // mount the exports as files here; empty: no FUSE
  std::string metrics;                   // [HOST:]PORT of the Prometheus endpoint; empty: none
  unsigned threads = 0;                  // 0: one per core
  unsigned fuse_threads = 0;             // 0: FuseFrontEnd::default_threads()
  unsigned poll_max_us = 50;             // busy-polling window at most, see nbd::Server
  bool poll_max_us_given = false;        // on the command line (--take-over keeps the old one else)
  std::string socket_group;              // --unix sockets go to this group, mode 0660
  // See nbd::ServerLimits.
  unsigned max_connections = nbd::ServerLimits::kDefaultMaxConnections;
  std::string max_buffer_bytes = "256M";  // a SIZE, as for memory:SIZE
  unsigned handshake_timeout_s = nbd::ServerLimits::kDefaultHandshakeTimeout.count();
  TlsOptionsText tls;
  std::string take_over;                 // the control socket of a gateway to take over from
  std::string xts_provider = "auto";     // auto, openssl or gcrypt (crypto/xts_provider.hpp)
};

// Declares the subcommand's options on `app`, filling `options` when parsed.
CLI::App* add_serve_command(CLI::App& app, ServeOptions& options);
// Runs the server; returns the process exit code (2 for unusable arguments, before serving).
int run_serve(const ServeOptions& options);

}  // namespace volgate::gateway
