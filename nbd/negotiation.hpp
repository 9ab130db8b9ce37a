#pragma once
// The fixed-newstyle handshake as a pure state machine: the session feeds it the client's flags
// and options and writes back whatever it returns. Keeping sockets out makes every option path
// testable byte for byte.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "nbd/codec.hpp"
#include "nbd/export.hpp"

namespace volgate::nbd {

// NBD_OPT_STARTTLS, as the protocol's modes: off (NOTLS: STARTTLS is unsupported), on (the
// client chooses; every export either way) and require (FORCEDTLS: every option but STARTTLS
// and ABORT is refused with TLS_REQD until TLS is up, and EXPORT_NAME closes the connection).
enum class TlsMode { off, on, require };

// What the transmission phase needs to know about the handshake's outcome.
struct NegotiatedSession {
  std::shared_ptr<const Export> chosen;  // held: the export may leave the table meanwhile
  bool structured_replies = false;
  bool base_allocation = false;  // base:allocation selected for BLOCK_STATUS
  bool tls = false;              // the options that chose the export came over TLS
};

class Negotiation {
 public:
  // start_tls: the session must run the TLS handshake before the next option, then call
  // tls_started().
  enum class Next { more_options, start_tls, transmission, close };
  struct Step {
    Bytes reply;
    Next next = Next::more_options;
  };

  // Option payloads above this are not buffered; see handle_oversized().
  static constexpr uint32_t kMaxOptionPayload = 64 * 1024;

  explicit Negotiation(const ExportTable& exports, TlsMode tls = TlsMode::off)
      : exports_(exports), tls_mode_(tls) {}

  // False when the client sent flags we do not know (or without fixed newstyle): close.
  bool accept_client_flags(uint32_t flags);
  Step handle(uint32_t option, std::span<const std::byte> payload);
  // For an option whose payload (longer than kMaxOptionPayload) the session skipped.
  Step handle_oversized(uint32_t option);
  // From now on every option but ABORT is answered with NBD_REP_ERR_SHUTDOWN.
  void begin_shutdown() { shutting_down_ = true; }
  // The TLS handshake that STARTTLS announced succeeded: what was negotiated in clear is
  // forgotten, as the protocol requires (a man in the middle could have chosen it).
  void tls_started();

  const NegotiatedSession& result() const { return session_; }

 private:
  Step export_name(std::span<const std::byte> payload);
  Step list(uint32_t option, std::span<const std::byte> payload);
  Step info_or_go(uint32_t option, std::span<const std::byte> payload);
  Step structured_reply(uint32_t option, std::span<const std::byte> payload);
  Step meta_context(uint32_t option, std::span<const std::byte> payload);
  Step start_tls(uint32_t option, std::span<const std::byte> payload);
  void enter_transmission(std::shared_ptr<const Export> chosen);

  const ExportTable& exports_;
  const TlsMode tls_mode_;
  NegotiatedSession session_;
  bool no_zeroes_ = false;
  bool shutting_down_ = false;
  std::shared_ptr<const Export> meta_context_export_;  // named in the last SET_META_CONTEXT
};

}  // namespace volgate::nbd
