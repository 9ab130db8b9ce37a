#pragma once
// The controller is the source of truth for what the gateway serves: every export an attachment
// holds (attaching or attached) must be served, and no export of the controller's ("volume-*")
// that no attachment holds may be. reconcile_exports makes it so, in one pass: called when the
// gateway (re)starts and every few seconds by GatewayWatch, so a gateway that lost its exports
// (a restart) or kept one too many (a controller killed mid-detach) is repaired.
#include <cstddef>

#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct ExportRepairs {
  size_t added = 0;
  size_t removed = 0;
  size_t failed = 0;  // logged; tried again on the next pass
};

// Throws when the gateway cannot be asked what it serves.
ExportRepairs reconcile_exports(FlowServices& s);

}  // namespace volgate::controller
