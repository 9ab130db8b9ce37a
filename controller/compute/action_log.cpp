#include "controller/compute/action_log.hpp"

#include <spdlog/spdlog.h>

#include "controller/api/api_error.hpp"
#include "controller/domain/timestamp.hpp"
#include "controller/flows/flow.hpp"

namespace volgate::controller {

std::string new_request_id() { return "req-" + new_uuid(); }

void record_action_start(Store& store, const ActionStart& s) {
  const std::string now = utc_timestamp();
  store.insert_action({.request_id = s.request_id, .server_id = s.server_id, .project = s.project,
                       .action = s.action, .start_time = now, .events = {{.event = s.event, .start_time = now}}});
}

void record_event_end(Store& store, const std::string& request_id, const std::string& event,
                      const std::string& error) {
  try {
    store.update_action(request_id, [&](InstanceAction& a) {
      for (auto& e : a.events) {
        if (e.event != event) continue;
        e.finish_time = utc_timestamp();
        e.result = error.empty() ? kEventSuccess : kEventError;
        e.details = error;
      }
      if (!error.empty()) a.message = kEventError;
    });
  } catch (const ApiError& e) {
    if (e.kind != ApiError::Kind::not_found) throw;
    spdlog::debug("action {} is not in the log: its end is not recorded", request_id);
  }
}

}  // namespace volgate::controller
