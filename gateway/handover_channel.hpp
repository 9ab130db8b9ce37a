#pragma once
// The hand-over's wire: messages between the running gateway and its successor over the
// control socket's connection, once the HTTP request that started the hand-over was answered.
//
// A message is a 4-byte big-endian length and that many bytes of JSON; descriptors travel with
// it as SCM_RIGHTS. The JSON may carry volume keys: it lives only in wiping memory. Every call
// has a deadline, and a message is bounded (kMaxMessageBytes, kMaxDescriptors), so a peer that
// stalls or sends garbage ends the hand-over instead of holding the gateway.
#include <chrono>
#include <span>
#include <stdexcept>
#include <vector>

#include "common/unique_fd.hpp"
#include "gateway/control_protocol.hpp"

namespace volgate::gateway {

// The peer broke the protocol, went away, or did not answer in time. The message says which.
class HandoverError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct HandoverMessage {
  control::Json body;
  std::vector<UniqueFd> descriptors;
};

class HandoverChannel {
 public:
  using Clock = std::chrono::steady_clock;

  // A connection's unparsed bytes (at most a session's receive buffer, 256 KiB) in base64
  // fit, with room to spare.
  static constexpr size_t kMaxMessageBytes = 1024 * 1024;
  static constexpr size_t kMaxDescriptors = 16;

  // Takes a connected unix stream socket.
  explicit HandoverChannel(UniqueFd socket);

  // Throws HandoverError when the peer is gone or the deadline passes.
  void send(const control::Json& body, std::span<const int> descriptors, Clock::time_point deadline);
  void send(const control::Json& body, Clock::time_point deadline) { send(body, {}, deadline); }
  // Throws HandoverError on end of stream, a malformed or oversized message, or the deadline.
  HandoverMessage receive(Clock::time_point deadline);

  int descriptor() const { return socket_.get(); }

 private:
  // Waits until the socket is ready for `events` (POLLIN/POLLOUT) or throws at the deadline.
  void wait(short events, Clock::time_point deadline, const char* what);
  void read_exactly(std::byte* out, size_t length, Clock::time_point deadline,
                    std::vector<UniqueFd>* descriptors);

  UniqueFd socket_;
};

}  // namespace volgate::gateway
