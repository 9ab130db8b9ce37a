#include "controller/flows/flow_services.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

// Creates any of `directories` that is missing (the embedded default's image directory is new
// on a first start) and returns them.
std::vector<std::string> created_directories(const std::vector<std::string>& directories) {
  for (const auto& dir : directories) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("image directory " + dir + ": " + ec.message());
  }
  return directories;
}

}  // namespace

FlowServices::FlowServices(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
                           std::optional<KeyWrap> key_wrap, BeforeTask before_task)
    : config(config),
      store(store),
      key_wrap(std::move(key_wrap)),
      scheduler(config.scheduler),
      images(created_directories(config.image_dirs)),
      uploads(created_directories({config.image_upload_dir}).front()),
      before_task(std::move(before_task)) {
  for (auto& p : pools) {
    pool_order_.push_back(p->config().name);
    pools_[p->config().name] = std::move(p);
  }
}

void FlowServices::publish_export(const Volume& volume, const std::string& export_name, bool read_only) {
  if (!gateway)
    throw ApiError(ApiError::Kind::service_unavailable,
                   "No gateway is configured to serve volumes on this host (see the README, section Controller).");
  std::optional<gateway::control::LuksKey> key;
  if (volume.encrypted) {
    if (!key_wrap || volume.wrapped_key.empty())
      throw std::runtime_error("encrypted volume " + volume.id + " has no passphrase to unlock it with");
    key = gateway::control::LuksKey{gateway::control::LuksKey::Kind::passphrase,
                                    key_wrap->unwrap(volume.wrapped_key, volume.id)};
  }
  try {
    gateway->publish(export_name, pool(volume.pool).export_spec(volume.id), read_only, key ? &*key : nullptr);
  } catch (const gateway::GatewayControlError& e) {
    if (e.status == 0) {
      // The answer goes to API users, who are not told how the host is laid out: the log names the socket.
      spdlog::warn("the gateway did not answer: {}", e.what());
      throw ApiError(ApiError::Kind::service_unavailable, "The gateway did not answer: " + without_paths(e.what()));
    }
    throw std::runtime_error(std::string("the gateway refused to serve the volume: ") + e.what());
  }
}

void FlowServices::withdraw_export(const std::string& export_name) {
  if (!gateway) return;
  try {
    gateway->withdraw(export_name);
  } catch (const std::exception& e) {
    spdlog::warn("export {}: could not remove it from the gateway ({}); the export check will", export_name,
                 e.what());
  }
}

Pool& FlowServices::pool(const std::string& name) {
  auto it = pools_.find(name);
  if (it == pools_.end()) throw std::runtime_error("pool '" + name + "' is not configured");
  return *it->second;
}

std::vector<PoolState> FlowServices::pool_states() {
  std::map<std::string, double> allocated;
  for (const auto& v : store.all_volumes())
    if (!v.pool.empty()) allocated[v.pool] += static_cast<double>(v.size_gb);
  std::vector<PoolState> states;
  for (const auto& name : pool_order_) {
    Pool& p = *pools_.at(name);
    const PoolConfig& c = p.config();
    PoolState s;
    s.name = name;
    s.availability_zone = c.availability_zone;
    try {
      PoolCapacity cap = p.capacity();
      s.total_gb = static_cast<double>(cap.total_bytes) / kGiB;
      s.free_gb = static_cast<double>(cap.free_bytes) / kGiB;
    } catch (const std::exception& e) {
      spdlog::warn("pool {}: no capacity: {}", name, e.what());  // reported as 0: filtered out
    }
    s.allocated_gb = allocated[name];
    s.max_over_subscription_ratio = c.max_over_subscription_ratio;
    s.reserved_percentage = c.reserved_percentage;
    s.thin_provisioning = c.thin_provisioning;
    s.capabilities = p.capabilities();
    states.push_back(std::move(s));
  }
  return states;
}

Volume FlowServices::get_volume(const std::string& project, const std::string& id) {
  auto v = store.find_volume(id);
  if (!v || v->project != project) not_found("Volume " + id + " could not be found.");
  return *v;
}

Snapshot FlowServices::get_snapshot(const std::string& project, const std::string& id) {
  auto s = store.find_snapshot(id);
  if (!s || s->project != project) not_found("Snapshot " + id + " could not be found.");
  return *s;
}

Backup FlowServices::get_backup(const std::string& project, const std::string& id) {
  auto b = store.find_backup(id);
  if (!b || b->project != project) not_found("Backup " + id + " could not be found.");
  return *b;
}

BackupRepository& FlowServices::backup_repository() {
  std::lock_guard lock(mutex_);
  if (!backup_repository_) {
    if (config.backups.kind == "directory" && config.backups.directory.empty())
      throw std::runtime_error("no backup repository is configured");
    backup_repository_ = std::make_unique<BackupRepository>(config.backups);
  }
  return *backup_repository_;
}

void FlowServices::refuse_while_busy(const std::string& what, const std::vector<std::string>& resource_ids,
                                     size_t own) {
  size_t busy = 0;
  std::string first;
  for (const FlowRecord& record : store.journal_unfinished()) {
    if (std::find(resource_ids.begin(), resource_ids.end(), record.resource_id) == resource_ids.end()) continue;
    ++busy;
    if (first.empty() || record.kind.rfind("delete_", 0) != 0) first = record.kind;
  }
  if (busy > own)
    conflict(what + " has an operation in progress (" + first +
             "); an admin's reset or force-delete waits until no operation works on it.");
}

void FlowServices::refuse_while_backup_busy(const std::string& backup_id, size_t own) {
  size_t busy = 0;
  std::string first;
  for (const FlowRecord& record : store.journal_unfinished()) {
    bool on_it = record.resource_id == backup_id;
    if (!on_it && (record.kind == "create_backup" || record.kind == "restore_backup")) {
      const auto context = nlohmann::json::parse(record.context, nullptr, false);
      on_it = context.is_object() && context.value("backup_id", std::string()) == backup_id;
    }
    if (!on_it) continue;
    ++busy;
    if (first.empty() || record.kind.rfind("delete_", 0) != 0) first = record.kind;
  }
  if (busy > own)
    conflict("Backup " + backup_id + " has an operation in progress (" + first +
             "); an admin's reset or force-delete waits until no operation works on it.");
}

CopyProgress FlowServices::progress_reporter(const std::string& volume_id) {
  return [this, volume_id](uint64_t done, uint64_t total) {
    if (stopping) throw Cancelled();
    std::lock_guard lock(mutex_);
    progress_[volume_id] = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
  };
}

std::optional<double> FlowServices::progress(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  auto it = progress_.find(volume_id);
  if (it == progress_.end()) return std::nullopt;
  return it->second;
}

void FlowServices::clear_progress(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  progress_.erase(volume_id);
}

std::string FlowServices::hold_image(OpenedImage image) {
  const std::string handle = new_uuid();
  std::lock_guard lock(mutex_);
  images_held_[handle] = std::make_shared<const OpenedImage>(std::move(image));
  return handle;
}

std::shared_ptr<const OpenedImage> FlowServices::held_image(const std::string& handle) {
  std::lock_guard lock(mutex_);
  auto it = images_held_.find(handle);
  // A flow from before a restart: its descriptor went with the old process.
  if (it == images_held_.end()) throw std::runtime_error("the image file is no longer open");
  return it->second;
}

void FlowServices::release_image(const std::string& handle) {
  if (handle.empty()) return;
  std::lock_guard lock(mutex_);
  images_held_.erase(handle);
}

}  // namespace volgate::controller
