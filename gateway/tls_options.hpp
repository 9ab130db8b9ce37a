#pragma once
// `volgate serve`'s TLS options (--tls, --tls-certificates, --tls-psk, --tls-verify-peer) as
// text, checked together before anything is loaded, so that every bad combination is one
// precise message and exit code 2.
#include <string>
#include <string_view>

#include "crypto/tls_credentials.hpp"
#include "nbd/negotiation.hpp"
#include "nbd/server.hpp"

namespace volgate::gateway {

struct TlsOptionsText {
  std::string mode = "off";      // off, on, require
  std::string certificates_dir;  // x509: ca-cert.pem, server-cert.pem, server-key.pem
  std::string psk_file;          // IDENTITY:HEXKEY lines
  bool verify_peer = false;
};

// Throws std::invalid_argument for anything but off, on and require.
nbd::TlsMode parse_tls_mode(std::string_view text);
// The credentials to load for these options (empty with --tls off), or std::invalid_argument
// for a combination that cannot work: TLS without credentials, credentials with --tls off,
// both x509 and PSK, --tls-verify-peer without x509.
crypto::TlsServerOptions check_tls_options(const TlsOptionsText& text);
// check_tls_options, then the credentials loaded (std::runtime_error naming the bad file).
nbd::ServerTls load_server_tls(const TlsOptionsText& text);

}  // namespace volgate::gateway
