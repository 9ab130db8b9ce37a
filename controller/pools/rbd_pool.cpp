#include "controller/pools/rbd_pool.hpp"

#include <fcntl.h>
#include <rados/librados.hpp>
#include <rbd/librbd.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <vector>

#include "backends/rados_cluster.hpp"
#include "backends/rbd_device.hpp"
#include "controller/pools/rbd_volume_io.hpp"

namespace volgate::controller {
namespace {

constexpr size_t kCopyChunk = 4 << 20;  // one default RBD object

std::string volume_image(const std::string& id) { return "volume-" + id; }
std::string snapshot_image(const std::string& id) { return "snapshot-" + id; }
constexpr std::string_view kBackupSnapshotPrefix = "backup.";
std::string backup_snapshot(const std::string& backup_id) { return std::string(kBackupSnapshotPrefix) + backup_id; }

bool all_zero(const char* data, size_t length) {
  for (size_t i = 0; i < length; ++i)
    if (data[i]) return false;
  return true;
}

// Hands librbd's copy progress to ours. A CopyProgress that throws (cancel) must not unwind
// through librbd: the exception is kept and the copy asked to stop.
class Progress : public librbd::ProgressContext {
 public:
  explicit Progress(const CopyProgress& progress) : progress_(progress) {}
  int update_progress(uint64_t offset, uint64_t total) override {
    if (!progress_ || failure_) return failure_ ? -ECANCELED : 0;
    try {
      progress_(offset, total);
    } catch (...) {
      failure_ = std::current_exception();
      return -ECANCELED;
    }
    return 0;
  }
  void rethrow() const {
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  const CopyProgress& progress_;
  std::exception_ptr failure_;
};

}  // namespace

// The connection is the gateway's shared one (backends::RadosCluster), so the pool and the
// RbdDevices it opens for LUKS formatting use one client, with the same settings and errors as
// `volgate serve`. librados' C++ classes are used for the image work; the IoCtx is made from a
// C handle, and it holds its own reference to it.
struct RbdPool::Cluster {
  std::shared_ptr<backends::RadosCluster> connection;  // outlives io (declared first)
  librados::IoCtx io;
  librbd::RBD rbd;
};

backends::RadosClientOptions RbdPool::client_options() const {
  backends::RadosClientOptions options{.ceph_conf = config_.ceph_conf, .ceph_id = config_.ceph_client};
  if (!config_.ceph_keyring.empty()) options.keyring = config_.ceph_keyring;
  return options;
}

RbdPool::RbdPool(PoolConfig config) : config_(std::move(config)), cluster_(std::make_unique<Cluster>()) {
  const std::string where = "pool '" + config_.name + "': ";
  try {
    cluster_->connection = backends::RadosCluster::connect(client_options());
  } catch (const std::exception& e) {
    throw std::runtime_error(where + e.what());
  }
  rados_ioctx_t io = nullptr;
  if (int rc = rados_ioctx_create(cluster_->connection->handle(), config_.rbd_pool.c_str(), &io); rc < 0)
    throw std::runtime_error(where + "open Ceph pool " + config_.rbd_pool + ": " + std::strerror(-rc));
  librados::IoCtx::from_rados_ioctx_t(io, cluster_->io);
  rados_ioctx_destroy(io);  // drops the C reference; cluster_->io keeps its own
}

RbdPool::~RbdPool() { cluster_->io.close(); }

PoolCapacity RbdPool::capacity() {
  rados_cluster_stat_t stat{};
  int rc = rados_cluster_stat(cluster_->connection->handle(), &stat);
  if (rc < 0) throw std::runtime_error("pool '" + config_.name + "': cluster stat: " + std::strerror(-rc));
  PoolCapacity cap{.total_bytes = stat.kb * 1024, .free_bytes = stat.kb_avail * 1024};
  if (cap.total_bytes == 0 && config_.total_capacity_gb > 0) {
    // Without a manager the cluster reports nothing; trust the configured size, all free
    // (RBD is thin: what the images hold is not subtracted here).
    cap.total_bytes = static_cast<uint64_t>(config_.total_capacity_gb * (1ull << 30));
    cap.free_bytes = cap.total_bytes;
  }
  return cap;
}

std::map<std::string, std::string> RbdPool::capabilities() const {
  std::map<std::string, std::string> caps = config_.capabilities;
  caps["driver"] = "rbd";
  caps["storage_protocol"] = "ceph";
  caps["thin_provisioning_support"] = "true";
  caps["thick_provisioning_support"] = "false";
  caps["snapshot_support"] = "true";
  caps["encryption_support"] = "true";
  caps["multiattach"] = "false";
  caps["multipath"] = "false";  // librbd reaches the OSDs itself; there are no paths to choose
  return caps;
}

void RbdPool::create_volume(const std::string& volume_id, uint64_t bytes) {
  int order = 0;
  const std::string name = volume_image(volume_id);
  int rc = cluster_->rbd.create2(cluster_->io, name.c_str(), bytes, RBD_FEATURE_LAYERING, &order);
  if (rc == -EEXIST) {
    resize_volume(volume_id, bytes);  // created before a restart: make it the size asked for
    return;
  }
  if (rc < 0) throw std::runtime_error("pool '" + config_.name + "': create image " + name + ": " + std::strerror(-rc));
}

void RbdPool::copy_image(const std::string& source, const std::string& target, uint64_t bytes,
                         const CopyProgress& progress) {
  const std::string where = "pool '" + config_.name + "': ";
  remove_image(target);  // a partial copy left by a crash
  librbd::Image image;
  int rc = cluster_->rbd.open_read_only(cluster_->io, image, source.c_str(), nullptr);
  if (rc < 0) throw std::runtime_error(where + "open image " + source + ": " + std::strerror(-rc));
  uint64_t source_size = 0;
  image.size(&source_size);
  if (bytes < source_size) throw std::invalid_argument(where + "image " + source + " is larger than the new volume");
  Progress reporter(progress);
  reporter.update_progress(0, source_size);
  rc = image.copy_with_progress(cluster_->io, target.c_str(), reporter);
  reporter.rethrow();
  if (rc < 0) throw std::runtime_error(where + "copy " + source + " to " + target + ": " + std::strerror(-rc));
  image.close();
  if (bytes != source_size) {
    librbd::Image copy;
    rc = cluster_->rbd.open(cluster_->io, copy, target.c_str());
    if (rc >= 0) rc = copy.resize(bytes);
    if (rc < 0) throw std::runtime_error(where + "resize " + target + ": " + std::strerror(-rc));
  }
  if (progress) progress(source_size, source_size);
}

void RbdPool::clone_volume(const std::string& volume_id, const std::string& source_volume_id, uint64_t bytes,
                           const CopyProgress& progress) {
  copy_image(volume_image(source_volume_id), volume_image(volume_id), bytes, progress);
}

void RbdPool::create_volume_from_snapshot(const std::string& volume_id, const std::string& snapshot_id,
                                          uint64_t bytes, const CopyProgress& progress) {
  copy_image(snapshot_image(snapshot_id), volume_image(volume_id), bytes, progress);
}

void RbdPool::create_volume_from_file(const std::string& volume_id, int image_fd, uint64_t bytes,
                                      const CopyProgress& progress) {
  const std::string where = "pool '" + config_.name + "': ";
  struct stat st{};
  if (::fstat(image_fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "stat the image");
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  if (bytes < total) throw std::invalid_argument("the image is larger than the new volume");
  create_volume(volume_id, bytes);
  librbd::Image image;
  int rc = cluster_->rbd.open(cluster_->io, image, volume_image(volume_id).c_str());
  if (rc < 0) throw std::runtime_error(where + "open image: " + std::strerror(-rc));
  std::vector<char> buffer(kCopyChunk);
  if (progress) progress(0, total);
  for (uint64_t done = 0; done < total;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), total - done));
    ssize_t got = ::pread(image_fd, buffer.data(), want, static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw std::system_error(got < 0 ? errno : EIO, std::generic_category(), "read the image");
    // Zero chunks are not written: the image stays thin, and a new image reads zeroes.
    if (!all_zero(buffer.data(), static_cast<size_t>(got))) {
      ceph::bufferlist bl;
      bl.append(buffer.data(), static_cast<unsigned>(got));
      ssize_t n = image.write(done, static_cast<size_t>(got), bl);
      if (n != got) throw std::runtime_error(where + "write image: " + std::strerror(n < 0 ? static_cast<int>(-n) : EIO));
    }
    done += static_cast<uint64_t>(got);
    if (progress) progress(done, total);
  }
  rc = image.flush();
  if (rc < 0) throw std::runtime_error(where + "flush image: " + std::strerror(-rc));
}

void RbdPool::resize_volume(const std::string& volume_id, uint64_t bytes) {
  librbd::Image image;
  int rc = cluster_->rbd.open(cluster_->io, image, volume_image(volume_id).c_str());
  if (rc >= 0) rc = image.resize(bytes);
  if (rc < 0)
    throw std::runtime_error("pool '" + config_.name + "': resize " + volume_image(volume_id) + ": " +
                             std::strerror(-rc));
}

void RbdPool::remove_image(const std::string& name) {
  int rc = cluster_->rbd.remove(cluster_->io, name.c_str());
  if (rc < 0 && rc != -ENOENT)
    throw std::runtime_error("pool '" + config_.name + "': remove image " + name + ": " + std::strerror(-rc));
}

void RbdPool::delete_volume(const std::string& volume_id) {
  // The service deletes no volume that has snapshots, so any RBD snapshot-* still on the image is
  // one a crash left behind between its creation and its clone: it would block the removal.
  const std::string volume = volume_image(volume_id);
  std::vector<librbd::snap_info_t> snaps;
  {
    librbd::Image image;
    if (cluster_->rbd.open_read_only(cluster_->io, image, volume.c_str(), nullptr) < 0) return remove_image(volume);
    image.snap_list(snaps);
  }
  // Only ours: a snapshot someone made with the rbd tool keeps the image (and the error says so).
  // The backups' snapshots go with the volume: their backups are whole without them.
  for (const auto& snap : snaps)
    if (snap.name.starts_with("snapshot-") || snap.name.starts_with(kBackupSnapshotPrefix))
      remove_rbd_snapshot(volume, snap.name);
  remove_image(volume);
}

bool RbdPool::volume_exists(const std::string& volume_id) {
  librbd::Image image;
  return cluster_->rbd.open_read_only(cluster_->io, image, volume_image(volume_id).c_str(), nullptr) >= 0;
}

std::unique_ptr<backends::BlockDevice> RbdPool::open_volume(const std::string& volume_id) {
  backends::RbdOptions options;
  static_cast<backends::RadosClientOptions&>(options) = client_options();  // the pool's connection
  options.pool = config_.rbd_pool;
  options.image = volume_image(volume_id);
  try {
    return backends::RbdDevice::open(options);
  } catch (const std::exception& e) {
    throw std::runtime_error("pool '" + config_.name + "': " + e.what());
  }
}

gateway::ExportSpec RbdPool::export_spec(const std::string& volume_id) const {
  gateway::ExportSpec spec{.backend = gateway::ExportSpec::Backend::rbd};
  spec.rbd.pool = config_.rbd_pool;
  spec.rbd.image = volume_image(volume_id);
  spec.rbd.ceph_conf = config_.ceph_conf;
  spec.rbd.ceph_id = config_.ceph_client;
  if (!config_.ceph_keyring.empty()) spec.rbd.keyring = config_.ceph_keyring;
  return spec;
}

// A snapshot is an RBD snapshot of the volume's image (instant, and thin: only what the volume
// overwrites later is kept twice), exposed as a layered clone of it named snapshot-ID. The clone
// is the snapshot's handle, found by its id alone: its parent names the volume and the RBD
// snapshot, and copies made from it are full, flattened images that depend on nothing.
void RbdPool::create_snapshot(const std::string& snapshot_id, const std::string& volume_id, const CopyProgress&) {
  const std::string where = "pool '" + config_.name + "': ";
  const std::string volume = volume_image(volume_id), name = snapshot_image(snapshot_id);
  auto check = [&](int rc, const std::string& what) {
    if (rc < 0) throw std::runtime_error(where + what + ": " + std::strerror(-rc));
  };
  librbd::Image image;
  check(cluster_->rbd.open(cluster_->io, image, volume.c_str()), "open image " + volume);
  // Each step is skipped when a run cut short by a crash already did it.
  bool exists = false, is_protected = false;
  check(image.snap_exists2(name.c_str(), &exists), "look up snapshot " + volume + "@" + name);
  if (!exists) check(image.snap_create(name.c_str()), "snapshot " + volume + "@" + name);
  check(image.snap_is_protected(name.c_str(), &is_protected), "look up snapshot " + volume + "@" + name);
  // Protection is what lets a layered clone use the snapshot (clone format 1).
  if (!is_protected) check(image.snap_protect(name.c_str()), "protect " + volume + "@" + name);
  image.close();
  int order = 0;
  int rc = cluster_->rbd.clone(cluster_->io, volume.c_str(), name.c_str(), cluster_->io, name.c_str(),
                               RBD_FEATURE_LAYERING, &order);
  if (rc < 0 && rc != -EEXIST) {
    // Without its clone nobody could find the RBD snapshot again (the revert looks for the clone).
    remove_rbd_snapshot(volume, name);
    check(rc, "clone " + volume + "@" + name + " to " + name);
  }
}

// Unprotects and removes the RBD snapshot `name` of image `volume`, if it is there.
void RbdPool::remove_rbd_snapshot(const std::string& volume, const std::string& name) {
  const std::string where = "pool '" + config_.name + "': ";
  librbd::Image image;
  int rc = cluster_->rbd.open(cluster_->io, image, volume.c_str());
  if (rc == -ENOENT) return;
  bool is_protected = false;
  if (rc >= 0) rc = image.snap_is_protected(name.c_str(), &is_protected);
  if (rc == -ENOENT) return;
  if (rc >= 0 && is_protected) rc = image.snap_unprotect(name.c_str());
  if (rc >= 0) rc = image.snap_remove(name.c_str());
  if (rc < 0 && rc != -ENOENT)
    throw std::runtime_error(where + "remove snapshot " + volume + "@" + name + ": " + std::strerror(-rc));
}

void RbdPool::delete_snapshot(const std::string& snapshot_id) {
  const std::string name = snapshot_image(snapshot_id);
  librbd::Image handle;
  int rc = cluster_->rbd.open_read_only(cluster_->io, handle, name.c_str(), nullptr);
  if (rc == -ENOENT) return;  // gone, or a create that crashed before its clone (see delete_volume)
  librbd::linked_image_spec_t parent;
  librbd::snap_spec_t parent_snap;
  if (rc >= 0) rc = handle.get_parent(&parent, &parent_snap);
  handle.close();
  if (rc < 0 && rc != -ENOENT)
    throw std::runtime_error("pool '" + config_.name + "': find the parent of " + name + ": " + std::strerror(-rc));
  remove_image(name);
  if (rc >= 0) remove_rbd_snapshot(parent.image_name, parent_snap.name);
}

std::unique_ptr<VolumeReader> RbdPool::read_volume(const std::string& volume_id) {
  return read_rbd_image(cluster_->rbd, cluster_->io, volume_image(volume_id), std::nullopt, std::nullopt);
}

// The snapshot's clone reads as the volume did (its parent's data through include_parent).
std::unique_ptr<VolumeReader> RbdPool::read_snapshot(const std::string& snapshot_id) {
  return read_rbd_image(cluster_->rbd, cluster_->io, snapshot_image(snapshot_id), std::nullopt, std::nullopt);
}

std::unique_ptr<VolumeWriter> RbdPool::overwrite_volume(const std::string& volume_id) {
  return overwrite_rbd_image(cluster_->rbd, cluster_->io, volume_image(volume_id));
}

void RbdPool::create_backup_snapshot(const std::string& volume_id, const std::string& backup_id) {
  const std::string volume = volume_image(volume_id), name = backup_snapshot(backup_id);
  librbd::Image image;
  int rc = cluster_->rbd.open(cluster_->io, image, volume.c_str());
  bool exists = false;
  if (rc >= 0) rc = image.snap_exists2(name.c_str(), &exists);
  if (rc >= 0 && !exists) rc = image.snap_create(name.c_str());  // a run cut short may have made it
  if (rc < 0)
    throw std::runtime_error("pool '" + config_.name + "': snapshot " + volume + "@" + name + ": " + std::strerror(-rc));
}

std::vector<std::string> RbdPool::backup_snapshots(const std::string& volume_id) {
  const std::string volume = volume_image(volume_id);
  librbd::Image image;
  int rc = cluster_->rbd.open_read_only(cluster_->io, image, volume.c_str(), nullptr);
  if (rc == -ENOENT) return {};
  std::vector<librbd::snap_info_t> snaps;
  if (rc >= 0) rc = image.snap_list(snaps);
  if (rc < 0)
    throw std::runtime_error("pool '" + config_.name + "': list the snapshots of " + volume + ": " + std::strerror(-rc));
  std::vector<std::string> ids;
  for (const auto& snap : snaps)
    if (snap.name.starts_with(kBackupSnapshotPrefix)) ids.push_back(snap.name.substr(kBackupSnapshotPrefix.size()));
  return ids;
}

void RbdPool::delete_backup_snapshot(const std::string& volume_id, const std::string& backup_id) {
  remove_rbd_snapshot(volume_image(volume_id), backup_snapshot(backup_id));
}

std::unique_ptr<VolumeReader> RbdPool::read_backup_snapshot(const std::string& volume_id, const std::string& backup_id,
                                                            const std::string& since_backup_id) {
  std::optional<std::string> since;
  if (!since_backup_id.empty()) {
    librbd::Image image;
    bool exists = false;
    const std::string name = backup_snapshot(since_backup_id);
    if (cluster_->rbd.open_read_only(cluster_->io, image, volume_image(volume_id).c_str(), nullptr) >= 0 &&
        image.snap_exists2(name.c_str(), &exists) >= 0 && exists)
      since = name;
  }
  try {
    return read_rbd_image(cluster_->rbd, cluster_->io, volume_image(volume_id), backup_snapshot(backup_id), since);
  } catch (const std::exception& e) {
    throw std::runtime_error("pool '" + config_.name + "': " + e.what());
  }
}

}  // namespace volgate::controller
