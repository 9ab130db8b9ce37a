#include "controller/exports/export_reconciler.hpp"

#include <spdlog/spdlog.h>

#include <map>
#include <set>
#include <string_view>

namespace volgate::controller {

ExportRepairs reconcile_exports(FlowServices& s) {
  ExportRepairs repairs;
  if (!s.gateway) return repairs;
  // Read the gateway first: an export published after this is one the attachments read below
  // already hold, so it is never taken for an orphan.
  std::set<std::string> served;
  for (const auto& e : s.gateway->list()) served.insert(e.name);

  std::map<std::string, const Attachment*> wanted;  // export name -> one attachment holding it
  const std::vector<Attachment> attachments = s.store.all_attachments();
  for (const Attachment& a : attachments)
    if (holds_export(a)) wanted.emplace(a.export_name, &a);

  for (const auto& [name, attachment] : wanted) {
    if (served.count(name)) continue;
    try {
      auto volume = s.store.find_volume(attachment->volume_id);
      if (!volume) continue;
      s.publish_export(*volume, name, attachment->read_only);
      spdlog::info("export {}: served again for attachment {} of volume {}", name, attachment->id, volume->id);
      ++repairs.added;
    } catch (const std::exception& e) {
      spdlog::error("export {}: could not serve it again for attachment {}: {}", name, attachment->id, e.what());
      ++repairs.failed;
    }
  }
  for (const auto& name : served) {
    if (wanted.count(name) || !std::string_view(name).starts_with("volume-")) continue;
    // Read again: an attachment may have been updated since the list above.
    bool held = false;
    for (const Attachment& a : s.store.all_attachments()) held = held || (holds_export(a) && a.export_name == name);
    if (held) continue;
    spdlog::warn("export {}: no attachment holds it; removing it from the gateway", name);
    try {
      s.gateway->withdraw(name);
      ++repairs.removed;
    } catch (const std::exception& e) {
      spdlog::error("export {}: could not remove it: {}", name, e.what());
      ++repairs.failed;
    }
  }
  return repairs;
}

}  // namespace volgate::controller
