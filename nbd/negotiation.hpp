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

// What the transmission phase needs to know about the handshake's outcome.
struct NegotiatedSession {
  std::shared_ptr<const Export> chosen;  // held: the export may leave the table meanwhile
  bool structured_replies = false;
  bool base_allocation = false;  // base:allocation selected for BLOCK_STATUS
};

class Negotiation {
 public:
  enum class Next { more_options, transmission, close };
  struct Step {
    Bytes reply;
    Next next = Next::more_options;
  };

  // Option payloads above this are not buffered; see handle_oversized().
  static constexpr uint32_t kMaxOptionPayload = 64 * 1024;

  explicit Negotiation(const ExportTable& exports) : exports_(exports) {}

  // False when the client sent flags we do not know (or without fixed newstyle): close.
  bool accept_client_flags(uint32_t flags);
  Step handle(uint32_t option, std::span<const std::byte> payload);
  // For an option whose payload (longer than kMaxOptionPayload) the session skipped.
  Step handle_oversized(uint32_t option);
  // From now on every option but ABORT is answered with NBD_REP_ERR_SHUTDOWN.
  void begin_shutdown() { shutting_down_ = true; }

  const NegotiatedSession& result() const { return session_; }

 private:
  Step export_name(std::span<const std::byte> payload);
  Step list(uint32_t option, std::span<const std::byte> payload);
  Step info_or_go(uint32_t option, std::span<const std::byte> payload);
  Step structured_reply(uint32_t option, std::span<const std::byte> payload);
  Step meta_context(uint32_t option, std::span<const std::byte> payload);
  void enter_transmission(std::shared_ptr<const Export> chosen);

  const ExportTable& exports_;
  NegotiatedSession session_;
  bool no_zeroes_ = false;
  bool shutting_down_ = false;
  std::shared_ptr<const Export> meta_context_export_;  // named in the last SET_META_CONTEXT
};

}  // namespace volgate::nbd
