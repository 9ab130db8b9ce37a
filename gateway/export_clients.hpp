#pragma once
// Clients of exports other than NBD sessions (open files of the FUSE mount), which a forced
// removal through the control API must stop as it stops the NBD sessions of that export.
#include "nbd/export.hpp"

namespace volgate::gateway {

class ExportClients {
 public:
  virtual ~ExportClients() = default;
  // From any thread: stops serving `e` to these clients. Requests in flight are answered; the
  // clients then stop counting among `e`'s connections (ExportTable::detach).
  virtual void close_clients_of(const nbd::Export& e, bool hard) = 0;
};

}  // namespace volgate::gateway
