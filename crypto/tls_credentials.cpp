#include "crypto/tls_credentials.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstring>
#include <stdexcept>

#include "crypto/tls_stream.hpp"

namespace volgate::crypto {
namespace {

// Where an SSL_CTX keeps its TlsServerCredentials, for the PSK callback. An index of our own,
// not the context's app data: asio::ssl::context (the controller's HTTPS) claims that slot and
// deletes what it holds.
int credentials_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL reads this much of the socket at once when it can (read-ahead): several records per
// recv for large WRITE payloads, instead of a header and a body read per 16 KiB record.
constexpr size_t kReadAheadBytes = 128 * 1024;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// A private key or PSK file that other users can read is no secret.
void warn_if_readable_by_others(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 0077))
    spdlog::warn("{} is readable by other users (mode {:o}): it holds a secret, chmod 600 it",
                 path, st.st_mode & 0777);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// OpenSSL's callback for a client's PSK identity (TLS 1.2, and TLS 1.3 with a SHA-256 suite):
// the key, or 0 to refuse, with the reason kept for the connection's log line.
unsigned psk_server_callback(SSL* ssl, const char* identity, unsigned char* psk, unsigned max_length) {
  auto* credentials =
      static_cast<const TlsServerCredentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), credentials_index()));
  TlsStream* stream = TlsStream::of(ssl);
  std::string name = identity ? identity : "";
  if (name.size() > 256) name = name.substr(0, 256) + "...";
  const SecureBytes* key = credentials ? credentials->psk_key(identity ? identity : "") : nullptr;
  if (!key || key->size() > max_length) {
    if (stream) stream->note_refusal("unknown PSK identity '" + name + "'");
    return 0;
  }
  if (stream) stream->note_psk_identity(name);
  std::memcpy(psk, key->data(), key->size());
  return static_cast<unsigned>(key->size());
}

}  // namespace

std::string openssl_error_text(const char* fallback) {
  unsigned long code = ERR_get_error();
  if (code == 0) return fallback;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

PskKeys parse_psk_keys(std::span<const std::byte> bytes, const std::string& where) {
  PskKeys keys;
  const char* text = reinterpret_cast<const char*>(bytes.data());
  size_t pos = 0;
  unsigned line = 0;
  while (pos < bytes.size()) {
    ++line;
    size_t end = pos;
    while (end < bytes.size() && text[end] != '\n') ++end;
    std::string_view entry(text + pos, end - pos);
    pos = end + 1;
    if (!entry.empty() && entry.back() == '\r') entry.remove_suffix(1);
    if (entry.empty()) continue;
    auto at = [&](const std::string& what) {
      return std::invalid_argument(where + " line " + std::to_string(line) + ": " + what);
    };
    size_t colon = entry.find(':');
    if (colon == std::string_view::npos) throw at("expected IDENTITY:HEXKEY");
    if (colon == 0) throw at("empty identity");
    std::string_view hex = entry.substr(colon + 1);
    if (hex.empty() || hex.size() % 2 != 0) throw at("the key must be an even number of hex digits");
    if (hex.size() / 2 > PSK_MAX_PSK_LEN) throw at("the key is longer than 512 bytes");
    SecureBytes key(hex.size() / 2);
    for (size_t i = 0; i < key.size(); ++i) {
      int high = hex_value(hex[2 * i]);
      int low = hex_value(hex[2 * i + 1]);
      if (high < 0 || low < 0) throw at("the key holds a character that is not a hex digit");
      key.data()[i] = static_cast<std::byte>(high << 4 | low);
    }
    std::string identity(entry.substr(0, colon));
    if (keys.count(identity)) throw at("identity '" + identity + "' is given twice");
    keys.emplace(std::move(identity), std::move(key));
  }
  if (keys.empty()) throw std::invalid_argument(where + ": no IDENTITY:HEXKEY line");
  return keys;
}

std::shared_ptr<const TlsServerCredentials> TlsServerCredentials::load(const TlsServerOptions& options) {
  if (options.certificates_dir.empty() == options.psk_file.empty())
    throw std::invalid_argument("TLS needs either a certificates directory or a PSK file");
  if (options.verify_peer && options.certificates_dir.empty())
    throw std::invalid_argument("verifying client certificates needs x509 certificates");
  std::shared_ptr<TlsServerCredentials> credentials(new TlsServerCredentials);
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) throw std::runtime_error("TLS: " + openssl_error_text("cannot create a context"));
  credentials->context_ = ctx;
  // TLS 1.2 at least, as the NBD protocol asks; no renegotiation (a client could make us do
  // handshakes for ever) and no session tickets (NBD clients do not resume sessions).
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // Partial writes let a sender go on with what a record took; moving buffers let it retry
  // from wherever the bytes now are.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, kReadAheadBytes);
  SSL_CTX_set_ex_data(ctx, credentials_index(), credentials.get());
  if (!options.certificates_dir.empty()) {
    credentials->load_x509(options);
  } else {
    credentials->load_psk(options.psk_file);
  }
  return credentials;
}

TlsServerCredentials::~TlsServerCredentials() {
  if (context_) SSL_CTX_free(context_);
}

void TlsServerCredentials::load_x509(const TlsServerOptions& options) {
  const std::string& dir = options.certificates_dir;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    throw std::runtime_error("TLS certificates directory " + dir + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    throw std::runtime_error("TLS certificates directory " + dir + ": not a directory");
  const std::string cert = dir + "/server-cert.pem";
  const std::string key = dir + "/server-key.pem";
  const std::string ca = dir + "/ca-cert.pem";
  const std::string crl = dir + "/ca-crl.pem";
  for (const auto& path : {cert, key})
    if (!exists(path)) throw std::runtime_error(path + ": " + std::strerror(errno));
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(context_, cert.c_str()) != 1)
    throw std::runtime_error(cert + ": " + openssl_error_text());
  warn_if_readable_by_others(key);
  if (SSL_CTX_use_PrivateKey_file(context_, key.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error(key + ": " + openssl_error_text());
  if (SSL_CTX_check_private_key(context_) != 1)
    throw std::runtime_error(key + ": does not match " + cert + " (" + openssl_error_text() + ")");
  // A server whose own certificate expired fails every handshake: say so now.
  X509* own = SSL_CTX_get0_certificate(context_);
  if (own && X509_cmp_current_time(X509_get0_notAfter(own)) < 0)
    throw std::runtime_error(cert + ": the certificate has expired");
  if (own && X509_cmp_current_time(X509_get0_notBefore(own)) > 0)
    throw std::runtime_error(cert + ": the certificate is not valid yet");

  const bool have_ca = exists(ca);
  if (options.verify_peer && !have_ca)
    throw std::runtime_error(ca + ": " + std::strerror(ENOENT) + " (needed to verify clients)");
  if (have_ca) {
    if (SSL_CTX_load_verify_locations(context_, ca.c_str(), nullptr) != 1)
      throw std::runtime_error(ca + ": " + openssl_error_text());
  }
  if (options.verify_peer) {
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
    if (!names) throw std::runtime_error(ca + ": " + openssl_error_text("no certificate in it"));
    SSL_CTX_set_client_CA_list(context_, names);
    SSL_CTX_set_verify(context_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    if (exists(crl)) {
      X509_STORE* store = SSL_CTX_get_cert_store(context_);
      X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
      if (!lookup || X509_load_crl_file(lookup, crl.c_str(), X509_FILETYPE_PEM) <= 0)
        throw std::runtime_error(crl + ": " + openssl_error_text());
      X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
  }
  description_ = "x509 certificates from " + dir +
                 (options.verify_peer ? ", client certificates verified against ca-cert.pem"
                                      : ", client certificates not asked for");
}

void TlsServerCredentials::load_psk(const std::string& path) {
  warn_if_readable_by_others(path);
  SecureBytes text = read_key_file(path);  // wiped when it goes, like every key it held
  psk_keys_ = parse_psk_keys(text.span(), path);
  SSL_CTX_set_psk_server_callback(context_, psk_server_callback);
  // TLS 1.2 needs PSK suites named; TLS 1.3 uses its usual ones (a SHA-256 one for the PSK).
  if (SSL_CTX_set_cipher_list(context_, "ECDHEPSK+AESGCM:DHEPSK+AESGCM:PSK+AESGCM:"
                                        "ECDHEPSK+CHACHA20:DHEPSK+CHACHA20:PSK+CHACHA20:"
                                        "ECDHEPSK:DHEPSK:PSK:!aNULL:!eNULL:!3DES:!MD5:!RC4") != 1)
    throw std::runtime_error("TLS PSK cipher list: " + openssl_error_text());
  description_ = "PSK, " + std::to_string(psk_keys_.size()) + " identit" +
                 (psk_keys_.size() == 1 ? "y" : "ies") + " from " + path;
}

const SecureBytes* TlsServerCredentials::psk_key(std::string_view identity) const {
  auto found = psk_keys_.find(identity);
  return found == psk_keys_.end() ? nullptr : &found->second;
}

}  // namespace volgate::crypto
