#pragma once
// A TLS server's credentials, loaded once and shared by every connection: x509 from a directory
// laid out as QEMU and nbdkit expect it (ca-cert.pem, server-cert.pem, server-key.pem, and
// ca-crl.pem when present), or pre-shared keys from a file of `username:hexkey` lines (the
// format of nbdkit's --tls-psk and QEMU's tls-creds-psk keys.psk). Any TLS server of the
// project (the NBD gateway, the controller's HTTPS) builds its SSL_CTX here.
#include <map>
#include <memory>
#include <span>
#include <string>

#include "crypto/secure_bytes.hpp"

using SSL_CTX = struct ssl_ctx_st;

namespace volgate::crypto {

struct TlsServerOptions {
  std::string certificates_dir;  // x509; exclusive with psk_file
  std::string psk_file;          // pre-shared keys
  bool verify_peer = false;      // x509: clients must show a certificate the CA signed
};

// PSK identities and their keys (the decoded bytes, in wiped memory).
using PskKeys = std::map<std::string, SecureBytes, std::less<>>;

// Parses a PSK file's content: one `identity:hexkey` per line, blank lines ignored. Throws
// std::invalid_argument naming `where` and the line number (never a key) for a line without a
// colon, an empty identity, a key that is not an even number of hex digits, or a repeated
// identity.
PskKeys parse_psk_keys(std::span<const std::byte> text, const std::string& where);

class TlsServerCredentials {
 public:
  // Throws std::runtime_error naming the file and what is wrong with it (never a key's bytes).
  static std::shared_ptr<const TlsServerCredentials> load(const TlsServerOptions& options);
  ~TlsServerCredentials();
  TlsServerCredentials(const TlsServerCredentials&) = delete;
  TlsServerCredentials& operator=(const TlsServerCredentials&) = delete;

  // The context to make each connection's SSL from. OpenSSL counts its references itself.
  SSL_CTX* context() const { return context_; }
  bool uses_psk() const { return !psk_keys_.empty(); }
  // For the log: "x509 certificates from DIR, client certificates verified", "PSK, 2 identities
  // from FILE".
  const std::string& description() const { return description_; }
  // The key of a PSK identity, or null.
  const SecureBytes* psk_key(std::string_view identity) const;

 private:
  TlsServerCredentials() = default;
  void load_x509(const TlsServerOptions& options);
  void load_psk(const std::string& path);

  SSL_CTX* context_ = nullptr;
  PskKeys psk_keys_;
  std::string description_;
};

// The most recent OpenSSL error of this thread as text (and the queue emptied), or `fallback`.
std::string openssl_error_text(const char* fallback = "unknown TLS error");

}  // namespace volgate::crypto
