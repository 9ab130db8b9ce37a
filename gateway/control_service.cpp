#include "gateway/control_service.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <thread>

#include "common/untrusted_json.hpp"
#include "crypto/luks_device.hpp"
#include "gateway/unlocked_device.hpp"
#include "nbd/export_flush.hpp"

namespace volgate::gateway {
namespace {

using control::Json;

// Clients that went on sending after their export was removed with force get this long to
// receive the answers to what they had in flight before their connections are cut (as at a
// graceful stop of the server), then this long to go once cut.
constexpr auto kGracefulDrain = nbd::Server::kDrainTimeout;
constexpr auto kHardDrain = std::chrono::seconds(5);
// How long a removal without force waits for connections that are closing anyway.
constexpr auto kDisconnectSettle = std::chrono::milliseconds(500);

ControlResponse json_response(int status, const Json& body) {
  WipingString text = control::to_text(body);
  return {status, std::string(text.data(), text.size())};
}

ControlResponse error(int status, std::string_view message) {
  return json_response(status, control::error_to_json(status, message));
}

std::string to_std(const WipingString& s) { return std::string(s.data(), s.size()); }

// The device's last flush before it goes. If the storage does not answer in time, the answer
// to DELETE does not wait for it.
void final_flush(const std::shared_ptr<const nbd::Export>& e) {
  const nbd::FlushOutcome outcome = nbd::flush_exports({e}, nbd::kFinalFlushTimeout);
  if (!outcome.unanswered.empty())
    spdlog::warn("export '{}': removed; its final flush did not finish within {} s", e->name,
                 nbd::kFinalFlushTimeout.count());
  for (const auto& [name, ec] : outcome.failed)
    spdlog::error("export '{}': removed; its final flush failed: {}", name, ec.message());
}

}  // namespace

void ControlService::adopt(const ExportSpec& spec, std::shared_ptr<const nbd::Export> served) {
  std::lock_guard lock(mutex_);
  Entry entry{spec, spec.read_only, spec.luks_key_file.has_value(), control::target_to_json(spec), std::move(served)};
  entries_.insert_or_assign(spec.name, std::move(entry));
}

void ControlService::adopt(const handover::ExportDefinition& d, std::shared_ptr<const nbd::Export> served) {
  std::lock_guard lock(mutex_);
  Entry entry{d.target, d.read_only, d.luks.has_value(), control::target_to_json(d.target), std::move(served)};
  entries_.insert_or_assign(d.name, std::move(entry));
}

std::vector<handover::ExportDefinition> ControlService::definitions() const {
  std::lock_guard lock(mutex_);
  std::vector<handover::ExportDefinition> out;
  for (const auto& served : *server_.exports().all()) {
    auto it = entries_.find(served->name);
    if (it == entries_.end()) continue;
    handover::ExportDefinition d;
    d.name = served->name;
    d.target = handover::with_absolute_paths(it->second.target);
    d.target.luks_key_file.reset();
    d.read_only = it->second.read_only;
    if (it->second.encrypted) {
      const auto* luks = dynamic_cast<const crypto::LuksDevice*>(served->device.get());
      if (!luks) throw std::logic_error("export '" + served->name + "' is encrypted but not a LUKS device");
      const crypto::SecureBytes& key = luks->volume_key();
      control::LuksKey copy{control::LuksKey::Kind::volume_key, crypto::SecureBytes(key.size())};
      std::copy(key.data(), key.data() + key.size(), copy.bytes.data());
      d.luks = std::move(copy);
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::optional<std::string> ControlService::first_export_on(ExportSpec::Backend backend) const {
  std::lock_guard lock(mutex_);
  for (const auto& [name, entry] : entries_)
    if (entry.target.backend == backend) return name;
  return std::nullopt;
}

ControlResponse ControlService::handle(std::string_view method, std::string_view target, const WipingString& body) {
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view query = target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view();
  constexpr std::string_view kExports = "/v1/exports";
  if (path == "/v1/health") {
    if (method != "GET") return error(405, "/v1/health takes GET");
    return health();
  }
  if (path == kExports) {
    if (method != "GET") return error(405, "/v1/exports takes GET");
    return list();
  }
  if (!path.starts_with(kExports) || path.size() <= kExports.size() + 1 || path[kExports.size()] != '/')
    return error(404, "no such resource");
  std::string name(path.substr(kExports.size() + 1));
  if (!control::valid_export_name(name))
    return error(400, "export names are 1-255 characters of letters, digits, '-', '_', '.', ':'");
  bool force = false;
  if (method == "DELETE") {
    if (query == "force=true") force = true;
    else if (!query.empty() && query != "force=false") return error(400, "DELETE takes ?force=true or nothing");
  } else if (!query.empty()) {
    return error(400, std::string(method) + " takes no query string");
  }
  if (method == "GET") return get(name);
  if (method == "PUT") return put(name, body);
  if (method == "DELETE") return remove(name, force);
  return error(405, "/v1/exports/{name} takes GET, PUT or DELETE");
}

ControlResponse ControlService::health() const {
  std::lock_guard lock(mutex_);
  control::Health h{"ok", entries_.size(), server_.connection_count(), static_cast<int64_t>(::getpid())};
  return json_response(200, control::health_to_json(h));
}

control::ExportInfo ControlService::info(const std::string& name, const Entry& entry) const {
  const nbd::ExportCounters& c = *entry.served->counters;
  const nbd::ExportCounters::Totals t = c.totals();
  control::ExportInfo out;
  out.name = name;
  out.target = entry.target;
  out.read_only = entry.read_only;
  out.encrypted = entry.encrypted;
  out.size = entry.served->device->size();
  out.connections = c.connections.load(std::memory_order_relaxed);
  out.requests = {t.reads, t.writes, t.bytes_read, t.bytes_written, t.errors};
  return out;
}

ControlResponse ControlService::list() const {
  std::lock_guard lock(mutex_);
  Json exports = Json::array();
  // In the order they were added, as NBD_OPT_LIST shows them.
  for (const auto& served : *server_.exports().all()) {
    auto it = entries_.find(served->name);
    if (it != entries_.end()) exports.push_back(control::export_to_json(info(it->first, it->second)));
  }
  return json_response(200, Json{{"exports", std::move(exports)}});
}

ControlResponse ControlService::get(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return error(404, "no export named '" + name + "'");
  return json_response(200, Json{{"export", control::export_to_json(info(name, it->second))}});
}

ControlResponse ControlService::put(const std::string& name, const WipingString& body) {
  control::PutExportRequest request;
  try {
    request = control::put_request_from_json(parse_untrusted_json_as<Json>(std::string_view(body.data(), body.size())));
  } catch (const std::exception& e) {  // ProtocolError or UntrustedJsonError
    return error(400, e.what());
  }
  request.target.name = name;

  std::lock_guard lock(mutex_);
  if (server_.stopping()) return error(503, "the gateway is stopping");
  const bool encrypted = request.luks.has_value();
  Json canonical = control::target_to_json(request.target);
  if (auto it = entries_.find(name); it != entries_.end()) {
    const Entry& existing = it->second;
    if (existing.canonical_target != canonical || existing.read_only != request.read_only ||
        existing.encrypted != encrypted)
      return error(409, "export '" + name + "' is already served with another target, read_only or encryption (" +
                            to_std(existing.canonical_target.dump()) + ", read_only " +
                            (existing.read_only ? "true" : "false") + ")");
    if (encrypted) {
      const auto& served = dynamic_cast<const crypto::LuksDevice&>(*existing.served->device);
      const char* field = request.luks->kind == control::LuksKey::Kind::volume_key ? "luks.volume_key" : "luks.passphrase";
      try {
        if (!unlocks_served_volume(served, *request.luks))
          return error(400, "export '" + name + "': " + field + ": not the key of the volume it serves");
      } catch (const std::exception& e) {
        return error(400, "export '" + name + "': " + field + ": " + e.what());
      }
    }
    return json_response(200, Json{{"export", control::export_to_json(info(name, existing))}, {"unchanged", true}});
  }

  std::shared_ptr<backends::BlockDevice> device;
  try {
    device = open_unlocked(request.target, request.luks);
  } catch (const crypto::LuksError& e) {
    const char* what = e.kind == crypto::LuksError::Kind::wrong_volume_key ? "luks.volume_key: "
                       : e.kind == crypto::LuksError::Kind::wrong_passphrase ? "luks.passphrase: "
                                                                               : "LUKS: ";
    return error(400, "export '" + name + "': " + what + e.what());
  } catch (const std::exception& e) {
    return error(400, "export '" + name + "': " + e.what());
  }
  std::string description = device->description();
  std::shared_ptr<const nbd::Export> served;
  try {
    served = server_.exports().add({name, description, std::move(device)});
  } catch (const std::invalid_argument& e) {
    return error(409, e.what());  // added meanwhile by no one but us: cannot happen, but say so
  }
  Entry entry{std::move(request.target), request.read_only, encrypted, std::move(canonical), std::move(served)};
  auto [it, inserted] = entries_.insert_or_assign(name, std::move(entry));
  spdlog::info("export '{}' added: {}, {} bytes", name, description, it->second.served->device->size());
  return json_response(201, Json{{"export", control::export_to_json(info(name, it->second))}});
}

ControlResponse ControlService::remove(const std::string& name, bool force) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return error(404, "no export named '" + name + "'");
  using Outcome = nbd::ExportTable::Removal::Outcome;
  auto removal = server_.exports().remove(name, force);
  // A client that has just hung up (QEMU after a detach) is counted until its session has
  // wound down, a moment later: a removal right behind it should not be refused for that.
  const auto settle = std::chrono::steady_clock::now() + kDisconnectSettle;
  while (removal.outcome == Outcome::busy && std::chrono::steady_clock::now() < settle) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    removal = server_.exports().remove(name, force);
  }
  if (removal.outcome == Outcome::not_found) {
    entries_.erase(it);
    return error(404, "no export named '" + name + "'");
  }
  if (removal.outcome == Outcome::busy)
    return error(409, "export '" + name + "' has " + std::to_string(removal.connections) +
                          " connected client(s); DELETE with ?force=true to disconnect them");
  entries_.erase(it);
  const nbd::Export& e = *removal.removed;
  if (removal.connections > 0) {
    spdlog::info("export '{}': removing, {} client(s) to disconnect", name, removal.connections);
    drain(e);
  }
  final_flush(removal.removed);
  spdlog::info("export '{}' removed", name);
  return {204, {}};
}

void ControlService::drain(const nbd::Export& e) {
  auto wait_until_idle = [&](auto timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (e.counters->connections.load() > 0) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  };
  server_.close_sessions_of(e, false);
  if (other_clients_) other_clients_->close_clients_of(e, false);
  if (wait_until_idle(kGracefulDrain)) return;
  spdlog::warn("export '{}': clients still connected after {} s, closing their connections", e.name,
               kGracefulDrain.count());
  server_.close_sessions_of(e, true);
  if (other_clients_) other_clients_->close_clients_of(e, true);
  if (!wait_until_idle(kHardDrain))
    spdlog::warn("export '{}': {} session(s) still winding down", e.name, e.counters->connections.load());
}

}  // namespace volgate::gateway
