#include "gateway/tls_options.hpp"

#include <stdexcept>

namespace volgate::gateway {

nbd::TlsMode parse_tls_mode(std::string_view text) {
  if (text == "off") return nbd::TlsMode::off;
  if (text == "on") return nbd::TlsMode::on;
  if (text == "require") return nbd::TlsMode::require;
  throw std::invalid_argument("--tls '" + std::string(text) + "': expected off, on or require");
}

crypto::TlsServerOptions check_tls_options(const TlsOptionsText& text) {
  const nbd::TlsMode mode = parse_tls_mode(text.mode);
  const bool x509 = !text.certificates_dir.empty();
  const bool psk = !text.psk_file.empty();
  if (mode == nbd::TlsMode::off) {
    // Credentials given but unused would look like protection that is not there.
    if (x509 || psk || text.verify_peer)
      throw std::invalid_argument(std::string(x509 ? "--tls-certificates" : psk ? "--tls-psk" : "--tls-verify-peer") +
                                  " needs --tls on or --tls require");
    return {};
  }
  if (x509 && psk) throw std::invalid_argument("--tls-certificates and --tls-psk: give one of them, not both");
  if (!x509 && !psk)
    throw std::invalid_argument("--tls " + text.mode + " needs --tls-certificates DIR or --tls-psk FILE");
  if (text.verify_peer && !x509) throw std::invalid_argument("--tls-verify-peer needs --tls-certificates DIR");
  return {text.certificates_dir, text.psk_file, text.verify_peer};
}

nbd::ServerTls load_server_tls(const TlsOptionsText& text) {
  crypto::TlsServerOptions options = check_tls_options(text);
  nbd::ServerTls tls;
  tls.mode = parse_tls_mode(text.mode);
  if (tls.mode != nbd::TlsMode::off) tls.credentials = crypto::TlsServerCredentials::load(options);
  return tls;
}

}  // namespace volgate::gateway
