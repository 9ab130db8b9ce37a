#pragma once
// What a running gateway hands its successor (`volgate serve --take-over`), as the JSON of the
// hand-over's messages (HandoverChannel carries them). The exchange, in order:
//
//   successor                                   running gateway
//   POST /v1/handover {"versions": [1]}  ->
//                                        <-     101 Switching Protocols
//                                        <-     state: settings, exports with their volume
//                                               keys; listening sockets and the control socket
//   opens every export's storage
//   ready (or abort {message})           ->
//                                               pauses every connection at a request boundary,
//                                               answers what is in flight, flushes
//                                        <-     connection {...} + its socket, one per client
//                                        <-     paused {connections}
//   adopted                              ->
//                                        <-     commit (or resume: the successor lets go)
//   serves                                      exits 0
//
// Until commit the running gateway can take everything back; after `adopted` the successor
// serves only on commit, or when the running gateway vanished without a word (it died: the
// successor then serves what it has).
//
// The version is in the state: a successor speaking another one is refused before anything
// is paused.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/control_protocol.hpp"
#include "gateway/tls_options.hpp"
#include "nbd/session_pause.hpp"

namespace volgate::gateway {
struct ServeOptions;
}

namespace volgate::gateway::handover {

inline constexpr int kVersion = 1;

// The options of `volgate serve` that a successor inherits (listeners, exports and the control
// socket travel as descriptors and definitions). Paths are absolute.
struct Settings {
  unsigned threads = 0;
  unsigned poll_max_us = 0;
  unsigned max_connections = 0;
  std::string max_buffer_bytes;
  unsigned handshake_timeout_s = 0;
  TlsOptionsText tls;
};

struct ExportDefinition {
  std::string name;
  ExportSpec target;  // storage and options; luks_key_file unused
  bool read_only = false;
  std::optional<control::LuksKey> luks;  // the volume key of an encrypted export
};

struct State {
  int version = kVersion;
  // The running gateway's process. (SO_PEERCRED would name whoever created its listening
  // control socket: a predecessor of its own, after one hand-over.)
  int64_t pid = 0;
  Settings settings;
  // The descriptors that come with the state: `nbd_listeners` NBD listening sockets, then the
  // control socket, then the metrics listener when `metrics`.
  size_t nbd_listeners = 0;
  bool metrics = false;
  std::vector<ExportDefinition> exports;
};

// Every message is an object with a "type"; these build and check them. The readers throw
// HandoverError (handover_channel.hpp) naming the message and field.
control::Json message(std::string_view type);
std::string type_of(const control::Json& message);
// The "message" an `abort` or `resume` carries, or "no reason given".
std::string reason_of(const control::Json& message);

control::Json offer_to_json();
// The versions a successor offers, from the body of POST /v1/handover.
std::vector<int> offered_versions(const control::Json& body);

control::Json state_to_json(const State& state);
State state_from_json(const control::Json& json);

control::Json connection_to_json(const nbd::PausedConnection& connection);
// The descriptor is not in the JSON: the caller puts the one that came with the message in.
nbd::PausedConnection connection_from_json(const control::Json& json);

// An export's spec with every path in it made absolute (against this process's working
// directory), for a successor that may run elsewhere.
ExportSpec with_absolute_paths(ExportSpec spec);
Settings settings_of(const ServeOptions& options);

}  // namespace volgate::gateway::handover
