#pragma once
// A server's action log (Nova's instance actions): one entry per request that changed the
// server (attach_volume, detach_volume, start, stop), with the events that carried it out on the
// host and how each ended. An operator reads it to learn why an attach failed after the API had
// already answered, or what a restarted controller did with one it found half done.
#include <string>
#include <vector>

namespace volgate::controller {

struct InstanceActionEvent {
  std::string event;        // compute_attach_volume, compute_detach_volume, ...
  std::string start_time;
  std::string finish_time;  // empty while it runs
  std::string result;       // "Success" or "Error"; empty while it runs
  std::string details;      // why it failed (Nova's "details", 2.84)
};

struct InstanceAction {
  std::string request_id;  // req-UUID, the one the API answered in x-openstack-request-id
  std::string server_id;
  std::string project;
  std::string action;   // attach_volume, detach_volume, start, stop
  std::string message;  // "Error" once an event failed, as Nova sets it; else empty
  std::string start_time;
  std::string updated_at;
  std::vector<InstanceActionEvent> events;
};

inline constexpr const char* kEventSuccess = "Success";
inline constexpr const char* kEventError = "Error";

}  // namespace volgate::controller
