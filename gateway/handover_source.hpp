#pragma once
// The running gateway's side of a hand-over (see handover_state.hpp for the exchange): on the
// control API's thread, which it holds for the whole hand-over, so no export is added or
// removed meanwhile. Anything that goes wrong before the successor has everything rolls back:
// the paused sessions go on, and the clients notice one pause.
#include <chrono>
#include <functional>
#include <optional>

#include "common/unique_fd.hpp"
#include "gateway/control_service.hpp"
#include "gateway/handover_state.hpp"
#include "nbd/server.hpp"

namespace volgate::gateway {

class HandoverSource {
 public:
  // How long the successor may take to open every export (RBD and iSCSI log in: seconds).
  static constexpr std::chrono::seconds kOpenTimeout{120};
  // How long sessions may take to answer what they had read and pause; later ones close.
  static constexpr std::chrono::seconds kPauseTimeout{5};
  // The last flush before the successor writes: storage that does not answer in this time
  // fails the hand-over.
  static constexpr std::chrono::seconds kFlushTimeout{10};
  // Each step of the exchange with the successor once sessions are paused.
  static constexpr std::chrono::seconds kStepTimeout{10};

  struct Parts {
    nbd::Server& server;
    ControlService& service;
    handover::Settings settings;
    int control_fd = -1;  // the control API's listening socket
    int metrics_fd = -1;  // the metrics listener, -1 without --metrics
    // Why a hand-over cannot happen at all in this process (e.g. --fuse), or empty.
    std::string unsupported;
    // Called once the successor has everything, before the server stops: the control API must
    // then leave its socket file alone.
    std::function<void()> on_handed_over;
  };

  explicit HandoverSource(Parts parts) : parts_(std::move(parts)) {}

  // The answer to POST /v1/handover when it cannot start (409 or 400), or nullopt to go on.
  std::optional<ControlResponse> refuse(const WipingString& body) const;
  // Runs the hand-over on `connection` (the 101 answer is sent); returns when it ended. True
  // when the successor took over: this process then stops.
  bool run(UniqueFd connection);

 private:
  handover::State state() const;
  bool flush_all();

  Parts parts_;
};

}  // namespace volgate::gateway
