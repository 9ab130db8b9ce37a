#pragma once
// Writing a server's action log (see domain/instance_action.hpp) from the compute flows: each
// flow's first task after its checks records the action and its event as started, its revert
// records the event as failed with the flow's error, and its last task records success. Being
// tasks, they are journaled with the flow: a controller killed mid-attach leaves an action that
// its restart closes, with the reason.
#include <string>

#include "controller/store/store.hpp"

namespace volgate::controller {

// "req-" and a random UUID: the form Nova's request ids have.
std::string new_request_id();

struct ActionStart {
  std::string request_id;
  std::string server_id;
  std::string project;
  std::string action;  // attach_volume
  std::string event;   // compute_attach_volume
};

// Records the action (if it is not there yet) and its event as running.
void record_action_start(Store& store, const ActionStart& start);
// Records how the request's event ended: success when `error` is empty. An action that is not
// in the log (a flow from before the log existed) is left alone.
void record_event_end(Store& store, const std::string& request_id, const std::string& event,
                      const std::string& error);

}  // namespace volgate::controller
