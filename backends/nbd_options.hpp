#pragma once
// Which NBD server a NbdDevice re-exports and how it keeps the connection: the parsed form of
// nbd://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH (nbds:// and nbds+unix:// with
// TLS) with their options.
#include <chrono>
#include <string>

namespace volgate::backends {

struct NbdOptions {
  std::string uri;          // as the user wrote it; handed to libnbd unchanged
  std::string export_name;  // decoded, for messages ("" is the server's default export)
  std::string socket;       // nbd+unix: the socket's path
  std::string host;         // nbd: host name or address, and port
  unsigned port = 10809;
  // How long requests wait for a lost upstream connection to come back before they fail with
  // EIO (QEMU's reconnect-delay). Zero: they fail at once. Reconnection itself never stops.
  std::chrono::seconds reconnect_delay{0};
  // Upstream connections; more than one only when the server advertises multi-conn.
  unsigned connections = 1;
  // Each connection attempt (connect and handshake) is abandoned after this long.
  std::chrono::seconds connect_timeout{10};
  bool read_only = false;
  // nbds:// and nbds+unix://: TLS required. x509 with the CA (and a client certificate, if the
  // server asks for one) in tls_certificates, laid out as for QEMU and nbdkit, or the system's
  // CAs when empty; or a pre-shared key from tls_psk_file (username:hexkey lines).
  bool tls = false;
  std::string tls_certificates;
  std::string tls_psk_file;
  std::string tls_username;  // the PSK identity, or the x509 user; empty: libnbd's default
};

}  // namespace volgate::backends
