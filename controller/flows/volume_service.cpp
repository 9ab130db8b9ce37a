#include "controller/flows/volume_service.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "backends/sync_io.hpp"
#include "controller/api/api_error.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What LUKS2 puts before the data with libcryptsetup's defaults: an encrypted volume's payload
// is its size minus this.
constexpr uint64_t kLuksHeaderBytes = 16 << 20;

// Thrown through a copy when the controller stops.
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("the controller stopped before the operation finished") {}
};

std::string str(const json& c, const char* key) { return c.value(key, std::string()); }

uint64_t gib_for(uint64_t bytes) { return (bytes + kGiB - 1) / kGiB; }

// The status an extend returns its volume to (journals from before the field say available).
VolumeStatus status_before_extend(const json& c) {
  return parse_volume_status(str(c, "status_before")).value_or(VolumeStatus::available);
}

// Writes the image file open on `fd` into `device` from offset 0, every byte (an encrypted
// device's fresh blocks do not read as zeroes, so zeroes must be written too).
void copy_file_into(int fd, backends::BlockDevice& device, const CopyProgress& progress) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "stat the image");
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  std::vector<std::byte> buffer(1 << 20);
  backends::SyncIo io;
  uint64_t done = 0;
  while (done < total) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), total - done));
    ssize_t got = ::pread(fd, buffer.data(), want, static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw std::system_error(got < 0 ? errno : EIO, std::generic_category(), "read the image");
    // The encryption sector is the device's minimum block: pad the tail with zeroes.
    size_t length = static_cast<size_t>(got);
    uint32_t block = device.capabilities().min_block_size;
    if (length % block) {
      size_t padded = (length + block - 1) / block * block;
      std::memset(buffer.data() + length, 0, padded - length);
      length = padded;
    }
    if (auto ec = io.write(device, done, {buffer.data(), length}))
      throw std::system_error(ec, "write into the volume");
    done += static_cast<uint64_t>(got);
    if (progress) progress(done, total);
  }
  if (auto ec = io.flush(device)) throw std::system_error(ec, "flush the volume");
}

// Creates any of `directories` that is missing (the embedded default's image directory is new
// on a first start) and returns them.
const std::vector<std::string>& created_directories(const std::vector<std::string>& directories) {
  for (const auto& dir : directories) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error("image directory " + dir + ": " + ec.message());
  }
  return directories;
}

}  // namespace

VolumeService::VolumeService(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
                             std::optional<KeyWrap> key_wrap, ServiceOptions options)
    : config_(config),
      store_(store),
      key_wrap_(std::move(key_wrap)),
      options_(std::move(options)),
      scheduler_(config.scheduler),
      images_(created_directories(config.image_dirs)) {
  for (auto& p : pools) {
    pool_order_.push_back(p->config().name);
    pools_[p->config().name] = std::move(p);
  }
  if (!options_.run_inline)
    for (unsigned i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

VolumeService::~VolumeService() { stop(); }

void VolumeService::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_flag_ = true;
  }
  stopping_ = true;
  wake_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

void VolumeService::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
}

void VolumeService::worker_loop() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock lock(mutex_);
      // Queued work still runs when stopping: a flow cancelled at its first copy reverts.
      wake_.wait(lock, [this] { return stopping_flag_ || !queue_.empty(); });
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    work();
    {
      std::lock_guard lock(mutex_);
      --running_;
    }
    idle_.notify_all();
  }
}

void VolumeService::run_in_background(std::function<void()> work) {
  if (options_.run_inline) {
    work();
    return;
  }
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(work));
  }
  wake_.notify_one();
}

void VolumeService::start_flow(std::shared_ptr<Flow> flow, size_t sync_tasks) {
  flow->run(sync_tasks);  // failures here are the caller's (400, 404, 409, 413)
  if (flow->finished()) return;
  // From here on the caller has an answer; failures show in the resource's status.
  flow->context()["accepted"] = true;
  run_in_background([flow] {
    try {
      flow->run();
    } catch (const std::exception&) {
      // Already logged and reverted by the flow; the status says what happened.
    }
  });
}

std::shared_ptr<const OpenedImage> VolumeService::opened_image(const json& c) {
  std::lock_guard lock(mutex_);
  auto it = opened_images_.find(str(c, "image_handle"));
  // A flow from before a restart: its descriptor went with the old process.
  if (it == opened_images_.end()) throw std::runtime_error("the image file is no longer open");
  return it->second;
}

void VolumeService::release_image(const std::string& handle) {
  if (handle.empty()) return;
  std::lock_guard lock(mutex_);
  opened_images_.erase(handle);
}

Pool& VolumeService::pool(const std::string& name) {
  auto it = pools_.find(name);
  if (it == pools_.end()) throw std::runtime_error("pool '" + name + "' is not configured");
  return *it->second;
}

std::vector<PoolState> VolumeService::pool_states() {
  std::map<std::string, double> allocated;
  for (const auto& v : store_.all_volumes())
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

std::vector<PoolReport> VolumeService::pools() {
  std::vector<PoolReport> out;
  for (auto& s : pool_states()) out.push_back({s, pools_.at(s.name)->config().driver});
  return out;
}

CopyProgress VolumeService::progress_reporter(const std::string& volume_id) {
  return [this, volume_id](uint64_t done, uint64_t total) {
    if (stopping_) throw Cancelled();
    std::lock_guard lock(mutex_);
    progress_[volume_id] = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
  };
}

std::optional<double> VolumeService::progress(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  auto it = progress_.find(volume_id);
  if (it == progress_.end()) return std::nullopt;
  return it->second;
}

std::string VolumeService::export_target(const Volume& volume) {
  auto it = pools_.find(volume.pool);
  return it == pools_.end() ? std::string() : it->second->export_target(volume.id);
}

// ------------------------------------------------------------------------------ reads

Volume VolumeService::get_volume(const std::string& project, const std::string& id) {
  auto v = store_.find_volume(id);
  if (!v || v->project != project) not_found("Volume " + id + " could not be found.");
  return *v;
}

std::vector<Volume> VolumeService::list_volumes(const std::string& project) { return store_.list_volumes(project); }

Snapshot VolumeService::get_snapshot(const std::string& project, const std::string& id) {
  auto s = store_.find_snapshot(id);
  if (!s || s->project != project) not_found("Snapshot " + id + " could not be found.");
  return *s;
}

std::vector<Snapshot> VolumeService::list_snapshots(const std::string& project) {
  return store_.list_snapshots(project);
}

QuotaUsage VolumeService::quota_usage(const std::string& project) {
  return store_.quota_usage(project, config_.default_quotas);
}

void VolumeService::set_quota_limit(const std::string& project, const std::string& resource, int64_t limit) {
  if (!config_.default_quotas.count(resource)) bad_request("Unknown quota resource '" + resource + "'.");
  if (limit < -1) bad_request("Quota limit for " + resource + " must be -1 (unlimited) or more.");
  store_.set_quota_limit(project, resource, limit);
}

// ------------------------------------------------------------------------------ create volume

Volume VolumeService::create_volume(const CreateVolumeRequest& r) {
  json c = {{"volume_id", new_uuid()},  {"project", r.project},
            {"name", r.name},           {"description", r.description},
            {"size_gb", r.size_gb},     {"volume_type", r.volume_type},
            {"availability_zone", r.availability_zone},
            {"snapshot_id", r.snapshot_id}, {"source_volid", r.source_volid},
            {"image", r.image}};
  if (r.encrypted) c["encrypted"] = *r.encrypted;
  std::string id = c["volume_id"];
  auto flow = std::make_shared<Flow>(store_, "create_volume", id, create_volume_tasks(), c, options_.before_task);
  start_flow(flow, 4);
  return *store_.find_volume(id);
}

std::vector<Task> VolumeService::create_volume_tasks() {
  std::vector<Task> tasks;
  tasks.push_back({"validate", [this](json& c) {
    const std::string project = str(c, "project");
    uint64_t size = c.value("size_gb", uint64_t{0});
    std::string type_name = str(c, "volume_type");
    if (type_name.empty()) type_name = config_.default_volume_type;
    auto type = config_.volume_types.find(type_name);
    if (type == config_.volume_types.end()) not_found("Volume type " + type_name + " could not be found.");
    c["volume_type"] = type_name;
    // Asked for, or implied by the type; a copy of encrypted data inherits its encryption.
    const std::optional<bool> requested =
        c.contains("encrypted") ? std::optional<bool>(c["encrypted"].get<bool>()) : std::nullopt;
    bool encrypted = type->second.encrypted || requested.value_or(false);

    const std::string snapshot_id = str(c, "snapshot_id"), source_volid = str(c, "source_volid"),
                      image = str(c, "image");
    if (!snapshot_id.empty() + !source_volid.empty() + !image.empty() > 1)
      bad_request("Give at most one source: snapshot_id, source_volid or imageRef.");
    std::optional<Volume> source;  // whose data (and key) the new volume starts from
    if (!snapshot_id.empty()) {
      auto snap = store_.find_snapshot(snapshot_id);
      if (!snap || snap->project != project) not_found("Snapshot " + snapshot_id + " could not be found.");
      if (size == 0) size = snap->size_gb;  // no size given: the snapshot's
      if (snap->status != SnapshotStatus::available)
        bad_request("Snapshot " + snapshot_id + " is " + std::string(to_string(snap->status)) +
                    "; it must be available.");
      if (size < snap->size_gb)
        bad_request("Volume size " + std::to_string(size) + " GiB is smaller than the snapshot's " +
                    std::to_string(snap->size_gb) + " GiB.");
      c["only_pool"] = snap->pool;
      source = store_.find_volume(snap->volume_id);
    } else if (!source_volid.empty()) {
      source = store_.find_volume(source_volid);
      if (!source || source->project != project) not_found("Volume " + source_volid + " could not be found.");
      if (size == 0) size = source->size_gb;
      if (source->status != VolumeStatus::available && source->status != VolumeStatus::in_use)
        bad_request("Source volume " + source_volid + " is " + std::string(to_string(source->status)) +
                    "; it must be available or in-use.");
      if (size < source->size_gb)
        bad_request("Volume size " + std::to_string(size) + " GiB is smaller than the source volume's " +
                    std::to_string(source->size_gb) + " GiB.");
      c["only_pool"] = source->pool;
    } else if (!image.empty()) {
      // Opened now, once: the copy reads this descriptor, whatever happens to the path later.
      auto opened = std::make_shared<OpenedImage>(images_.open(image));
      const uint64_t need = gib_for(opened->size + (encrypted ? kLuksHeaderBytes : 0));
      if (size == 0) size = need;
      if (size < need)
        bad_request("Image " + image + " holds " + std::to_string(opened->size) +
                    " bytes; the volume must be at least " + std::to_string(need) + " GiB.");
      const std::string handle = new_uuid();
      c["image_handle"] = handle;
      std::lock_guard lock(mutex_);
      opened_images_[handle] = std::move(opened);
    }
    if (size == 0) bad_request("Volume size must be a whole number of GiB, at least 1.");
    c["size_gb"] = size;

    // A copy stays in its source's zone unless told otherwise (it is bound to the source's pool).
    std::string az = str(c, "availability_zone");
    if (az.empty()) az = source ? source->availability_zone : config_.default_availability_zone;
    bool known = false;
    for (const auto& [name, p] : pools_) known = known || p->config().availability_zone == az;
    if (!known) bad_request("Availability zone '" + az + "' is invalid.");
    c["availability_zone"] = az;

    if (source && !type->second.encrypted && !requested) encrypted = source->encrypted;
    c["encrypted"] = encrypted;
    if (encrypted && !key_wrap_) bad_request("Encrypted volumes need the controller's master key file.");
    if (source) {
      if (source->encrypted != encrypted)
        bad_request(std::string("A volume made from ") + (source->encrypted ? "an encrypted" : "a plain") +
                    " source must be " + (source->encrypted ? "encrypted" : "plain") + " as well.");
      c["key_source"] = source->id;
    }
  }, [this](json& c) { release_image(str(c, "image_handle")); }});

  tasks.push_back({"reserve_quota", [this](json& c) {
    if (!c.contains("reservation")) c["reservation"] = new_uuid();
    store_.reserve_quota(str(c, "reservation"), str(c, "project"),
                         {{kQuotaVolumes, 1}, {kQuotaGigabytes, c["size_gb"].get<int64_t>()}}, config_.default_quotas);
  }, [this](json& c) {
    if (c.contains("reservation")) store_.rollback_quota(str(c, "reservation"));
  }});

  tasks.push_back({"create_db_entry", [this](json& c) {
    Volume v;
    v.id = str(c, "volume_id");
    v.project = str(c, "project");
    v.name = str(c, "name");
    v.description = str(c, "description");
    v.size_gb = c["size_gb"].get<uint64_t>();
    v.status = VolumeStatus::creating;
    v.availability_zone = str(c, "availability_zone");
    v.volume_type = str(c, "volume_type");
    v.snapshot_id = str(c, "snapshot_id");
    v.source_volid = str(c, "source_volid");
    v.image = str(c, "image");
    v.encrypted = c.value("encrypted", false);
    store_.insert_volume(v);
    // The other half of the checks in the deletes' mark_deleting: a source being deleted (or
    // gone) since validate is not copied. Each side looks at the other's row after writing
    // its own, so of two racing requests at least one sees the other and is refused.
    if (!v.source_volid.empty()) {
      auto source = store_.find_volume(v.source_volid);
      if (!source || source->status == VolumeStatus::deleting || source->status == VolumeStatus::error_deleting)
        bad_request("Source volume " + v.source_volid + " is being deleted; it cannot be copied.");
    }
    if (!v.snapshot_id.empty()) {
      auto snap = store_.find_snapshot(v.snapshot_id);
      if (!snap || snap->status == SnapshotStatus::deleting || snap->status == SnapshotStatus::error_deleting)
        bad_request("Snapshot " + v.snapshot_id + " is being deleted; no volume can be made from it.");
    }
  }, [this](json& c) {
    const std::string id = str(c, "volume_id");
    if (!store_.find_volume(id)) return;
    if (!c.value("accepted", false)) {
      store_.delete_volume(id);  // the caller got an error, never this id
      return;
    }
    store_.update_volume(id, [&](Volume& v) {
      v.status = VolumeStatus::error;
      v.error_message = str(c, "error");
    });
  }});

  tasks.push_back({"commit_quota", [this](json& c) {
    store_.commit_quota(str(c, "reservation"), str(c, "volume_id"));
  }, [this](json& c) {
    if (c.contains("reservation")) store_.uncommit_quota(str(c, "reservation"));
  }});

  // ---- the rest runs in the background

  tasks.push_back({"schedule", [this](json& c) {
    ScheduleRequest request;
    request.size_gb = c["size_gb"].get<uint64_t>();
    request.availability_zone = str(c, "availability_zone");
    request.extra_specs = config_.volume_types.at(str(c, "volume_type")).extra_specs;
    request.only_pool = str(c, "only_pool");
    if (c.value("encrypted", false)) request.extra_specs["encryption_support"] = "true";
    const std::string chosen = scheduler_.choose(pool_states(), request);
    c["pool"] = chosen;
    store_.update_volume(str(c, "volume_id"), [&](Volume& v) { v.pool = chosen; });
    spdlog::info("volume {}: scheduled to pool {}", str(c, "volume_id"), chosen);
  }, [this](json& c) {
    const std::string id = str(c, "volume_id");
    if (store_.find_volume(id)) store_.update_volume(id, [](Volume& v) { v.pool.clear(); });
  }});

  tasks.push_back({"generate_key", [this](json& c) {
    if (!c.value("encrypted", false)) return;
    const std::string id = str(c, "volume_id");
    crypto::SecureBytes passphrase;
    const std::string key_source = str(c, "key_source");
    if (!key_source.empty()) {
      // A copy of an encrypted volume keeps its key: its data is encrypted with it.
      auto source = store_.find_volume(key_source);
      if (!source) throw std::runtime_error("source volume " + key_source + " disappeared");
      passphrase = key_wrap_->unwrap(source->wrapped_key, source->id);
    } else {
      passphrase = random_passphrase();
    }
    auto wrapped = key_wrap_->wrap(passphrase, id);
    store_.update_volume(id, [&](Volume& v) { v.wrapped_key = wrapped; });
  }, [this](json& c) {
    const std::string id = str(c, "volume_id");
    if (store_.find_volume(id)) store_.update_volume(id, [](Volume& v) { v.wrapped_key.clear(); });
  }});

  tasks.push_back({"create_on_pool", [this](json& c) {
    create_data(c);
    release_image(str(c, "image_handle"));
  }, [this](json& c) {
    release_image(str(c, "image_handle"));
    const std::string id = str(c, "volume_id");
    {
      std::lock_guard lock(mutex_);
      progress_.erase(id);
    }
    if (c.contains("pool") && pools_.count(str(c, "pool"))) pool(str(c, "pool")).delete_volume(id);
  }});

  tasks.push_back({"finish", [this](json& c) {
    const std::string id = str(c, "volume_id");
    store_.update_volume(id, [&](Volume& v) {
      if (v.status != VolumeStatus::creating) return;  // run again by recovery: already done
      require_transition("volume " + id, v.status, VolumeStatus::available);
      v.status = VolumeStatus::available;
      v.error_message.clear();
    });
    std::lock_guard lock(mutex_);
    progress_.erase(id);
  }, {}});
  return tasks;
}

void VolumeService::create_data(const json& c) {
  const std::string id = str(c, "volume_id");
  Pool& p = pool(str(c, "pool"));
  const uint64_t bytes = c["size_gb"].get<uint64_t>() * kGiB;
  const bool encrypted = c.value("encrypted", false);
  auto progress = progress_reporter(id);
  const std::string snapshot_id = str(c, "snapshot_id"), source_volid = str(c, "source_volid"),
                    image = str(c, "image");
  if (!snapshot_id.empty()) {
    p.create_volume_from_snapshot(id, snapshot_id, bytes, progress);
  } else if (!source_volid.empty()) {
    p.clone_volume(id, source_volid, bytes, progress);
  } else if (!image.empty() && !encrypted) {
    p.create_volume_from_file(id, opened_image(c)->fd.get(), bytes, progress);
  } else {
    p.create_volume(id, bytes);
    if (encrypted) {
      auto volume = store_.find_volume(id);
      auto passphrase = key_wrap_->unwrap(volume->wrapped_key, id);
      std::shared_ptr<backends::BlockDevice> device = p.open_volume(id);
      auto container = crypto::LuksContainer::format(*device, config_.luks, passphrase);
      if (!image.empty()) {
        crypto::LuksDevice plain(device, container.unlock(passphrase));
        copy_file_into(opened_image(c)->fd.get(), plain, progress);
      }
    }
  }
}

// ------------------------------------------------------------------------------ extend volume

Volume VolumeService::extend_volume(const std::string& project, const std::string& id, uint64_t new_size_gb) {
  json c = {{"volume_id", id}, {"project", project}, {"new_size_gb", new_size_gb}};
  auto flow = std::make_shared<Flow>(store_, "extend_volume", id, extend_volume_tasks(), c, options_.before_task);
  start_flow(flow, 3);
  return *store_.find_volume(id);
}

std::vector<Task> VolumeService::extend_volume_tasks() {
  std::vector<Task> tasks;
  tasks.push_back({"validate", [this](json& c) {
    Volume v = get_volume(str(c, "project"), str(c, "volume_id"));
    const uint64_t new_size = c["new_size_gb"].get<uint64_t>();
    if (new_size <= v.size_gb)
      bad_request("New size for extend must be greater than current size. (current: " + std::to_string(v.size_gb) +
                  ", extended: " + std::to_string(new_size) + ").");
    require_transition("volume " + v.id, v.status, VolumeStatus::extending);
    // An attached (in-use) volume can grow too; it goes back to what it was.
    c["status_before"] = std::string(to_string(v.status));
    c["old_size_gb"] = v.size_gb;
    c["pool"] = v.pool;
  }, {}});

  tasks.push_back({"reserve_quota", [this](json& c) {
    if (!c.contains("reservation")) c["reservation"] = new_uuid();
    const int64_t delta = c["new_size_gb"].get<int64_t>() - c["old_size_gb"].get<int64_t>();
    store_.reserve_quota(str(c, "reservation"), str(c, "project"), {{kQuotaGigabytes, delta}},
                         config_.default_quotas);
  }, [this](json& c) {
    if (c.contains("reservation")) store_.rollback_quota(str(c, "reservation"));
  }});

  tasks.push_back({"mark_extending", [this](json& c) {
    const std::string id = str(c, "volume_id");
    store_.update_volume(id, [&](Volume& v) {
      // Refuses a second extend racing this one past validate, and this one if another
      // finished meanwhile (the quota reserved here counts from the size validate saw).
      require_transition("volume " + id, v.status, VolumeStatus::extending);
      if (v.size_gb != c["old_size_gb"].get<uint64_t>())
        conflict("Volume " + id + " was extended to " + std::to_string(v.size_gb) + " GiB meanwhile.");
      v.status = VolumeStatus::extending;
    });
    c["marked"] = true;  // from here on `extending` is this flow's to undo
  }, [this](json& c) {
    const std::string id = str(c, "volume_id");
    if (!c.value("marked", false)) return;  // another flow's `extending`, or none
    store_.update_volume(id, [&](Volume& v) {
      if (v.status != VolumeStatus::extending) return;
      v.status = status_before_extend(c);
      v.error_message = c.value("accepted", false) ? "extend failed: " + str(c, "error") : std::string();
    });
  }});

  // ---- the rest runs in the background

  tasks.push_back({"extend_on_pool", [this](json& c) {
    pool(str(c, "pool")).resize_volume(str(c, "volume_id"), c["new_size_gb"].get<uint64_t>() * kGiB);
  }, [this](json& c) {
    // Nobody has seen the new blocks yet (the volume was `extending`), so it is safe to take
    // them back, which keeps the file's size equal to the size the database records.
    Pool& p = pool(str(c, "pool"));
    if (p.volume_exists(str(c, "volume_id")))
      p.resize_volume(str(c, "volume_id"), c["old_size_gb"].get<uint64_t>() * kGiB);
  }});

  tasks.push_back({"commit_quota", [this](json& c) {
    store_.commit_quota(str(c, "reservation"), str(c, "volume_id"));
  }, [this](json& c) {
    if (c.contains("reservation")) store_.uncommit_quota(str(c, "reservation"));
  }});

  tasks.push_back({"finish", [this](json& c) {
    const std::string id = str(c, "volume_id");
    store_.update_volume(id, [&](Volume& v) {
      if (v.status != VolumeStatus::extending) return;  // run again by recovery: already done
      v.status = status_before_extend(c);
      v.size_gb = c["new_size_gb"].get<uint64_t>();
      v.error_message.clear();
    });
  }, {}});
  return tasks;
}

// ------------------------------------------------------------------------------ delete volume

void VolumeService::delete_volume(const std::string& project, const std::string& id) {
  json c = {{"volume_id", id}, {"project", project}};
  auto flow = std::make_shared<Flow>(store_, "delete_volume", id, delete_volume_tasks(), c, options_.before_task);
  start_flow(flow, 2);
}

std::vector<Task> VolumeService::delete_volume_tasks() {
  std::vector<Task> tasks;
  tasks.push_back({"validate", [this](json& c) {
    Volume v = get_volume(str(c, "project"), str(c, "volume_id"));
    require_transition("volume " + v.id, v.status, VolumeStatus::deleting);
    auto snaps = store_.snapshots_of(v.id);
    if (!snaps.empty())
      bad_request("Volume " + v.id + " still has " + std::to_string(snaps.size()) + " dependent snapshot" +
                  (snaps.size() == 1 ? "" : "s") + ".");
    for (const auto& other : store_.all_volumes())
      if (other.source_volid == v.id && other.status == VolumeStatus::creating)
        conflict("Volume " + v.id + " is being copied into volume " + other.id + ".");
    c["pool"] = v.pool;
  }, {}});

  tasks.push_back({"mark_deleting", [this](json& c) {
    const std::string id = str(c, "volume_id");
    store_.update_volume(id, [&](Volume& v) {
      if (v.status == VolumeStatus::deleting && c.value("accepted", false)) return;  // resumed after a restart
      require_transition("volume " + id, v.status, VolumeStatus::deleting);
      c["status_before"] = std::string(to_string(v.status));
      v.status = VolumeStatus::deleting;
    });
    // A snapshot created between validate and here would lose its volume. Snapshot creation
    // checks the volume after inserting its row, and this checks the snapshots after marking
    // the volume, so of two racing requests at least one sees the other and is refused.
    if (!store_.snapshots_of(id).empty()) bad_request("Volume " + id + " gained a snapshot while being deleted.");
    // Likewise a copy of it that started after validate (see create's create_db_entry).
    for (const auto& other : store_.all_volumes())
      if (other.source_volid == id && other.status == VolumeStatus::creating)
        conflict("Volume " + id + " is being copied into volume " + other.id + ".");
  }, [this](json& c) {
    const std::string id = str(c, "volume_id");
    if (!store_.find_volume(id)) return;
    store_.update_volume(id, [&](Volume& v) {
      if (v.status != VolumeStatus::deleting) return;
      if (!c.value("accepted", false)) {  // refused before the caller was answered: as it was
        // Only if this flow marked it: a racing delete's `deleting` is not ours to undo.
        if (auto before = parse_volume_status(str(c, "status_before"))) v.status = *before;
        return;
      }
      v.status = VolumeStatus::error_deleting;
      v.error_message = "delete failed: " + str(c, "error");
    });
  }});

  // ---- the rest runs in the background

  tasks.push_back({"delete_on_pool", [this](json& c) {
    const std::string pool_name = str(c, "pool");
    if (!pool_name.empty()) pool(pool_name).delete_volume(str(c, "volume_id"));
  }, {}});

  tasks.push_back({"release_quota", [this](json& c) { store_.release_quota(str(c, "volume_id")); }, {}});

  tasks.push_back({"destroy_db_entry", [this](json& c) { store_.delete_volume(str(c, "volume_id")); }, {}});
  return tasks;
}

// ------------------------------------------------------------------------------ snapshots

Snapshot VolumeService::create_snapshot(const std::string& project, const std::string& volume_id,
                                        const std::string& name, const std::string& description, bool force) {
  json c = {{"snapshot_id", new_uuid()}, {"project", project},         {"volume_id", volume_id},
            {"name", name},              {"description", description}, {"force", force}};
  std::string id = c["snapshot_id"];
  auto flow = std::make_shared<Flow>(store_, "create_snapshot", id, create_snapshot_tasks(), c, options_.before_task);
  start_flow(flow, 4);
  return *store_.find_snapshot(id);
}

std::vector<Task> VolumeService::create_snapshot_tasks() {
  std::vector<Task> tasks;
  tasks.push_back({"validate", [this](json& c) {
    Volume v = get_volume(str(c, "project"), str(c, "volume_id"));
    const bool in_use_ok = c.value("force", false) && v.status == VolumeStatus::in_use;
    if (v.status != VolumeStatus::available && !in_use_ok)
      bad_request("Volume " + v.id + " is " + std::string(to_string(v.status)) +
                  "; a snapshot needs it available (or in-use with force).");
    c["size_gb"] = v.size_gb;
    c["pool"] = v.pool;
  }, {}});

  tasks.push_back({"reserve_quota", [this](json& c) {
    if (!c.contains("reservation")) c["reservation"] = new_uuid();
    store_.reserve_quota(str(c, "reservation"), str(c, "project"),
                         {{kQuotaSnapshots, 1}, {kQuotaGigabytes, c["size_gb"].get<int64_t>()}},
                         config_.default_quotas);
  }, [this](json& c) {
    if (c.contains("reservation")) store_.rollback_quota(str(c, "reservation"));
  }});

  tasks.push_back({"create_db_entry", [this](json& c) {
    Snapshot s;
    s.id = str(c, "snapshot_id");
    s.project = str(c, "project");
    s.volume_id = str(c, "volume_id");
    s.name = str(c, "name");
    s.description = str(c, "description");
    s.size_gb = c["size_gb"].get<uint64_t>();
    s.pool = str(c, "pool");
    store_.insert_snapshot(s);
    // The other half of the check in delete's mark_deleting: a volume being deleted (or gone)
    // since validate takes no snapshot.
    auto v = store_.find_volume(s.volume_id);
    if (!v || v->status == VolumeStatus::deleting || v->status == VolumeStatus::error_deleting)
      bad_request("Volume " + s.volume_id + " is being deleted; it takes no snapshot.");
  }, [this](json& c) {
    const std::string id = str(c, "snapshot_id");
    if (!store_.find_snapshot(id)) return;
    if (!c.value("accepted", false)) {
      store_.delete_snapshot(id);
      return;
    }
    store_.update_snapshot(id, [&](Snapshot& s) {
      s.status = SnapshotStatus::error;
      s.error_message = str(c, "error");
    });
  }});

  tasks.push_back({"commit_quota", [this](json& c) {
    store_.commit_quota(str(c, "reservation"), str(c, "snapshot_id"));
  }, [this](json& c) {
    if (c.contains("reservation")) store_.uncommit_quota(str(c, "reservation"));
  }});

  // ---- the rest runs in the background

  tasks.push_back({"create_on_pool", [this](json& c) {
    // A file pool's snapshot is a full copy: the controller's stop must be able to cut it short.
    pool(str(c, "pool")).create_snapshot(str(c, "snapshot_id"), str(c, "volume_id"), [this](uint64_t, uint64_t) {
      if (stopping_) throw Cancelled();
    });
  }, [this](json& c) {
    if (pools_.count(str(c, "pool"))) pool(str(c, "pool")).delete_snapshot(str(c, "snapshot_id"));
  }});

  tasks.push_back({"finish", [this](json& c) {
    const std::string id = str(c, "snapshot_id");
    store_.update_snapshot(id, [&](Snapshot& s) {
      if (s.status != SnapshotStatus::creating) return;  // run again by recovery: already done
      require_transition("snapshot " + id, s.status, SnapshotStatus::available);
      s.status = SnapshotStatus::available;
    });
  }, {}});
  return tasks;
}

void VolumeService::delete_snapshot(const std::string& project, const std::string& id) {
  json c = {{"snapshot_id", id}, {"project", project}};
  auto flow = std::make_shared<Flow>(store_, "delete_snapshot", id, delete_snapshot_tasks(), c, options_.before_task);
  start_flow(flow, 2);
}

std::vector<Task> VolumeService::delete_snapshot_tasks() {
  std::vector<Task> tasks;
  tasks.push_back({"validate", [this](json& c) {
    Snapshot s = get_snapshot(str(c, "project"), str(c, "snapshot_id"));
    require_transition("snapshot " + s.id, s.status, SnapshotStatus::deleting);
    for (const auto& v : store_.all_volumes())
      if (v.snapshot_id == s.id && v.status == VolumeStatus::creating)
        conflict("Snapshot " + s.id + " is being copied into volume " + v.id + ".");
    c["pool"] = s.pool;
  }, {}});

  tasks.push_back({"mark_deleting", [this](json& c) {
    const std::string id = str(c, "snapshot_id");
    store_.update_snapshot(id, [&](Snapshot& s) {
      if (s.status == SnapshotStatus::deleting && c.value("accepted", false)) return;  // resumed after a restart
      require_transition("snapshot " + id, s.status, SnapshotStatus::deleting);
      c["status_before"] = std::string(to_string(s.status));
      s.status = SnapshotStatus::deleting;
    });
    // A volume made from it that started after validate: one of the two is refused (see
    // create's create_db_entry).
    for (const auto& v : store_.all_volumes())
      if (v.snapshot_id == id && v.status == VolumeStatus::creating)
        conflict("Snapshot " + id + " is being copied into volume " + v.id + ".");
  }, [this](json& c) {
    const std::string id = str(c, "snapshot_id");
    if (!store_.find_snapshot(id)) return;
    store_.update_snapshot(id, [&](Snapshot& s) {
      if (s.status != SnapshotStatus::deleting) return;
      if (!c.value("accepted", false)) {  // refused before the caller was answered: as it was
        // Only if this flow marked it: a racing delete's `deleting` is not ours to undo.
        if (auto before = parse_snapshot_status(str(c, "status_before"))) s.status = *before;
        return;
      }
      s.status = SnapshotStatus::error_deleting;
      s.error_message = "delete failed: " + str(c, "error");
    });
  }});

  // ---- the rest runs in the background

  tasks.push_back({"delete_on_pool", [this](json& c) {
    if (!str(c, "pool").empty()) pool(str(c, "pool")).delete_snapshot(str(c, "snapshot_id"));
  }, {}});
  tasks.push_back({"release_quota", [this](json& c) { store_.release_quota(str(c, "snapshot_id")); }, {}});
  tasks.push_back({"destroy_db_entry", [this](json& c) { store_.delete_snapshot(str(c, "snapshot_id")); }, {}});
  return tasks;
}

// ------------------------------------------------------------------------------ recovery

std::vector<Task> VolumeService::tasks_of(const std::string& kind) {
  if (kind == "create_volume") return create_volume_tasks();
  if (kind == "extend_volume") return extend_volume_tasks();
  if (kind == "delete_volume") return delete_volume_tasks();
  if (kind == "create_snapshot") return create_snapshot_tasks();
  if (kind == "delete_snapshot") return delete_snapshot_tasks();
  throw std::runtime_error("unknown flow kind '" + kind + "'");
}

void VolumeService::recover() {
  for (const FlowRecord& record : store_.journal_unfinished()) {
    std::vector<Task> tasks;
    try {
      tasks = tasks_of(record.kind);
    } catch (const std::exception& e) {
      spdlog::error("flow {}: {}; left in the journal", record.id, e.what());
      continue;
    }
    Flow flow(store_, record, std::move(tasks));
    // Whoever started it got an answer (or lost the connection): the resource stays visible.
    flow.context()["accepted"] = true;
    const bool deleting = record.kind == "delete_volume" || record.kind == "delete_snapshot";
    // The last task may have committed before the journal entry was cleared: the work is done
    // and reverting it would undo what the user was told had succeeded. Tasks are idempotent,
    // so running the last one again finishes the flow either way.
    const bool in_last_task = static_cast<size_t>(record.task) + 1 == flow.task_count();
    if ((deleting || in_last_task) && record.phase == FlowRecord::Phase::running) {
      // A delete was asked for and accepted, or all but the last step is done: finish it.
      try {
        flow.resume();
      } catch (const std::exception& e) {
        spdlog::error("flow {} {}: could not finish: {}", record.kind, record.id, e.what());
      }
    } else {
      spdlog::warn("flow {} {} ({}): reverting what the previous run left half done", record.kind, record.id,
                   record.resource_id);
      flow.context()["error"] = "the controller stopped before the operation finished";
      flow.revert("the controller stopped before the operation finished");
    }
  }
  sweep_stuck_resources();
}

// A resource in a transient state with no flow to move it on (e.g. its journal entry could
// not be written) would stay there forever: give it a status an operator can act on.
void VolumeService::sweep_stuck_resources() {
  for (const auto& v : store_.all_volumes()) {
    if (v.status != VolumeStatus::creating && v.status != VolumeStatus::extending &&
        v.status != VolumeStatus::deleting)
      continue;
    spdlog::warn("volume {} was {} with no operation in progress; now error", v.id, to_string(v.status));
    store_.update_volume(v.id, [](Volume& x) {
      x.status = x.status == VolumeStatus::deleting ? VolumeStatus::error_deleting : VolumeStatus::error;
      x.error_message = "the controller stopped before the operation finished";
    });
  }
  for (const auto& v : store_.all_volumes()) {
    for (const auto& s : store_.snapshots_of(v.id)) {
      if (s.status != SnapshotStatus::creating && s.status != SnapshotStatus::deleting) continue;
      spdlog::warn("snapshot {} was {} with no operation in progress; now error", s.id, to_string(s.status));
      store_.update_snapshot(s.id, [](Snapshot& x) {
        x.status = x.status == SnapshotStatus::deleting ? SnapshotStatus::error_deleting : SnapshotStatus::error;
        x.error_message = "the controller stopped before the operation finished";
      });
    }
  }
}

}  // namespace volgate::controller
