#pragma once
// The server side of one TLS connection over a non-blocking socket, without an event loop of
// its own: each call does what the socket allows now and says what it waits for (readable,
// writable), so the caller's reactor does the waiting. OpenSSL reads and writes the socket
// itself: no copy of the ciphertext through memory buffers.
#include <cstddef>
#include <string>

using SSL = struct ssl_st;

namespace volgate::crypto {

class TlsServerCredentials;

class TlsStream {
 public:
  enum class Status {
    done,        // `bytes` moved (read, write), or the handshake finished
    want_read,   // call again once the socket is readable
    want_write,  // call again once the socket is writable
    closed,      // the peer ended the connection (close_notify or EOF)
    failed,      // a TLS error: failure() says which
  };
  struct Result {
    Status status;
    size_t bytes = 0;
  };

  // `fd` stays the caller's: the stream never closes it. Throws std::runtime_error when
  // OpenSSL cannot make a connection object.
  TlsStream(const TlsServerCredentials& credentials, int fd);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  Result handshake();
  // At most `length` bytes of plaintext.
  Result read(void* out, size_t length);
  // Some of `length` bytes, a record or more; after want_read/want_write, call again with the
  // same bytes (they may have moved), at least as many.
  Result write(const void* data, size_t length);
  // Sends a close_notify if the socket takes it now; never waits.
  void close_notify();

  // Plaintext decrypted and not yet read, and whether OpenSSL holds any input at all
  // (decrypted or not) that a read would return without the socket.
  size_t pending() const;
  bool has_buffered_input() const;
  bool established() const { return established_; }
  // Why the last call failed, for a log line.
  const std::string& failure() const { return failure_; }
  // What was negotiated, for a log line: "TLSv1.3 TLS_AES_256_GCM_SHA384, PSK identity 'x'".
  std::string summary() const;

  // The stream an SSL belongs to (for OpenSSL's callbacks), and a reason they give for
  // refusing the handshake, which failure() then reports.
  static TlsStream* of(SSL* ssl);
  void note_refusal(std::string reason) { refusal_ = std::move(reason); }
  void note_psk_identity(std::string identity) { psk_identity_ = std::move(identity); }

 private:
  Result outcome(int ret, const char* what);

  SSL* ssl_ = nullptr;
  bool established_ = false;
  std::string failure_;
  std::string refusal_;
  std::string psk_identity_;
};

}  // namespace volgate::crypto
