#include "crypto/tls_stream.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

#include "crypto/tls_credentials.hpp"

namespace volgate::crypto {
namespace {

// Where each SSL keeps its TlsStream, for the callbacks.
int stream_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// What a failed certificate check was about, in words ("certificate has expired").
std::string verify_failure(SSL* ssl) {
  long result = SSL_get_verify_result(ssl);
  if (result == X509_V_OK) return {};
  return std::string("client certificate refused: ") + X509_verify_cert_error_string(result);
}

}  // namespace

TlsStream::TlsStream(const TlsServerCredentials& credentials, int fd) {
  ssl_ = SSL_new(credentials.context());
  if (!ssl_) throw std::runtime_error("TLS: " + openssl_error_text("cannot create a connection"));
  SSL_set_ex_data(ssl_, stream_index(), this);
  if (SSL_set_fd(ssl_, fd) != 1) {
    SSL_free(ssl_);
    throw std::runtime_error("TLS: " + openssl_error_text("cannot attach the socket"));
  }
  SSL_set_accept_state(ssl_);
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

TlsStream* TlsStream::of(SSL* ssl) { return static_cast<TlsStream*>(SSL_get_ex_data(ssl, stream_index())); }

TlsStream::Result TlsStream::handshake() {
  ERR_clear_error();
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    established_ = true;
    return {Status::done};
  }
  return outcome(ret, "handshake");
}

TlsStream::Result TlsStream::read(void* out, size_t length) {
  size_t got = 0;
  ERR_clear_error();
  int ret = SSL_read_ex(ssl_, out, length, &got);
  if (ret == 1) return {Status::done, got};
  return outcome(ret, "read");
}

TlsStream::Result TlsStream::write(const void* data, size_t length) {
  size_t put = 0;
  ERR_clear_error();
  int ret = SSL_write_ex(ssl_, data, length, &put);
  if (ret == 1) return {Status::done, put};
  return outcome(ret, "write");
}

void TlsStream::close_notify() {
  if (!established_) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // one try: it queues the alert and sends what the socket takes
  ERR_clear_error();
}

size_t TlsStream::pending() const { return static_cast<size_t>(SSL_pending(ssl_)); }

bool TlsStream::has_buffered_input() const { return SSL_has_pending(ssl_) == 1; }

std::string TlsStream::summary() const {
  std::string text = SSL_get_version(ssl_);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_)) text += std::string(" ") + SSL_CIPHER_get_name(cipher);
  if (!psk_identity_.empty()) text += ", PSK identity '" + psk_identity_ + "'";
  if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
    text += std::string(", client certificate ") + subject;
  }
  return text;
}

TlsStream::Result TlsStream::outcome(int ret, const char* what) {
  const int saved_errno = errno;
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      return {Status::want_read};
    case SSL_ERROR_WANT_WRITE:
      return {Status::want_write};
    case SSL_ERROR_ZERO_RETURN:
      return {Status::closed};
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      // EOF (a client that hangs up without close_notify, as most NBD clients do) or a reset.
      if (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE) {
        failure_ = established_ ? "connection closed" : "the client hung up in the TLS handshake";
        return {Status::closed};
      }
      failure_ = std::string("TLS ") + what + ": " + std::strerror(saved_errno);
      return {Status::failed};
    default: {
      unsigned long code = ERR_peek_error();
      if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        failure_ = established_ ? "connection closed" : "the client hung up in the TLS handshake";
        return {Status::closed};
      }
      // The most telling reason first: our own refusal (unknown PSK identity), then the
      // certificate check, then OpenSSL's error.
      std::string reason = refusal_;
      if (reason.empty()) reason = verify_failure(ssl_);
      // The identity was known but the handshake failed after it: the keys differ (TLS 1.3
      // says "binder does not verify", TLS 1.2 "decrypt error").
      if (reason.empty() && !established_ && !psk_identity_.empty())
        reason = "wrong key for PSK identity '" + psk_identity_ + "'";
      std::string detail = openssl_error_text();
      failure_ = std::string("TLS ") + what + " failed: " + (reason.empty() ? detail : reason + " (" + detail + ")");
      return {Status::failed};
    }
  }
}

}  // namespace volgate::crypto
