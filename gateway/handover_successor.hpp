#pragma once
// The successor's side of a hand-over (`volgate serve --take-over`; see handover_state.hpp for
// the exchange): asks the gateway on a control socket to hand over, receives its state and
// listening sockets, and, once this process has opened every export, its connections.
#include <string>
#include <sys/types.h>
#include <vector>

#include "common/unique_fd.hpp"
#include "gateway/handover_channel.hpp"
#include "gateway/handover_state.hpp"

namespace volgate::gateway {

class HandoverSuccessor {
 public:
  // How long the running gateway may take to answer the request (it may be busy opening an
  // export for the control API) and to send its state.
  static constexpr std::chrono::seconds kRequestTimeout{30};
  // From `ready` to its connections: its pause, last flush and sending them.
  static constexpr std::chrono::seconds kConnectionsTimeout{30};
  // From `adopted` to its commit.
  static constexpr std::chrono::seconds kCommitTimeout{10};

  // Connects and asks to take over. Throws HandoverError: nothing listens at the path, or
  // the running gateway refused (the message is its answer's).
  explicit HandoverSuccessor(const std::string& control_path);

  handover::State& state() { return state_; }
  pid_t predecessor() const { return predecessor_; }
  // The descriptors that came with the state (see handover::State), taken once.
  std::vector<UniqueFd> take_nbd_listeners();
  UniqueFd take_control_listener();
  UniqueFd take_metrics_listener();  // empty without metrics

  // This process cannot serve what the predecessor does: it goes on, untouched.
  void abort(const std::string& message);
  // This process is ready: the predecessor pauses and sends its connections. Returns them
  // once it has committed, or when it died before committing (its connections that had come
  // by then are served; the others went with it). Throws HandoverError when it took them
  // back, or stopped answering while still alive: this process must then exit.
  std::vector<nbd::PausedConnection> take_connections();

 private:
  bool predecessor_alive() const;

  HandoverChannel channel_;
  pid_t predecessor_ = -1;
  handover::State state_;
  std::vector<UniqueFd> descriptors_;
};

}  // namespace volgate::gateway
