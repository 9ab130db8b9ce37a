#pragma once
// What the gateway's control API does, without the HTTP around it (ControlServer carries it):
// adds exports to a running nbd::Server, removes them, and reports them. One request is
// handled at a time: an export is opened (seconds for RBD or iSCSI) or drained while the next
// request waits, which keeps two changes of one name from racing.
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/control_protocol.hpp"
#include "gateway/export_clients.hpp"
#include "gateway/handover_state.hpp"
#include "nbd/server.hpp"

namespace volgate::gateway {

struct ControlResponse {
  int status = 200;
  std::string body;  // JSON, never a secret; empty for 204
};

class ControlService {
 public:
  // `other_clients`: clients of the exports besides the server's NBD sessions (the FUSE
  // mount's open files), stopped with them when an export is removed with force; may be null.
  explicit ControlService(nbd::Server& server, ExportClients* other_clients = nullptr)
      : server_(server), other_clients_(other_clients) {}

  // Lists an export that the command line gave (--export), so the API can report and remove it.
  void adopt(const ExportSpec& spec, std::shared_ptr<const nbd::Export> served);
  // Lists an export a predecessor served (volgate serve --take-over).
  void adopt(const handover::ExportDefinition& definition, std::shared_ptr<const nbd::Export> served);
  // Every export, in the order served, with the volume keys of encrypted ones: what a
  // successor needs to open them (see HandoverSource).
  std::vector<handover::ExportDefinition> definitions() const;
  // The name of an export on that kind of storage, if any.
  std::optional<std::string> first_export_on(ExportSpec::Backend backend) const;

  // `body` may hold a key: it is read in place and wiped by its owner.
  ControlResponse handle(std::string_view method, std::string_view target, const WipingString& body);

 private:
  struct Entry {
    ExportSpec target;
    bool read_only = false;
    bool encrypted = false;
    control::Json canonical_target;  // target_to_json(target): what "the same target" means
    std::shared_ptr<const nbd::Export> served;
  };

  ControlResponse health() const;
  ControlResponse list() const;
  ControlResponse get(const std::string& name) const;
  ControlResponse put(const std::string& name, const WipingString& body);
  ControlResponse remove(const std::string& name, bool force);
  control::ExportInfo info(const std::string& name, const Entry& entry) const;
  // Waits, a bounded time, until no session serves `e` any more: gracefully first, then hard.
  void drain(const nbd::Export& e);

  nbd::Server& server_;
  ExportClients* const other_clients_;
  mutable std::mutex mutex_;  // entries_, and one change at a time
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace volgate::gateway
