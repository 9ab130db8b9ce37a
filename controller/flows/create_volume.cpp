#include "controller/flows/create_volume.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <system_error>

#include "backends/sync_io.hpp"
#include "controller/api/api_error.hpp"
#include "common/unnamed_file.hpp"
#include "controller/flows/shared_tasks.hpp"
#include "controller/pools/qemu_img.hpp"
#include "crypto/luks_container.hpp"
#include "crypto/luks_device.hpp"

namespace volgate::controller {
namespace {

using Context = CreateVolumeContext;

uint64_t gib_for(uint64_t bytes) { return (bytes + kGiB - 1) / kGiB; }

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

// qemu-img info reads a header and a few tables: seconds would mean something is wrong.
constexpr std::chrono::milliseconds kInspectTimeout{20000};

// When the file's inode last changed (its data or its attributes), in nanoseconds.
int64_t changed_ns(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "stat the image");
  return static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

// The qcow2 image `image_fd` converted to raw in a file with no name in the state directory,
// which goes when its descriptor does. validate refused the headers that name other files;
// the conversion opens the image with no backing file anyway, and an image rewritten since
// validate looked at it (its ctime moved) is refused, so that what was checked is what was read.
UniqueFd converted_to_raw(FlowServices& s, const Context& c, int image_fd) {
  UniqueFd directory(::open(s.config.state_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!directory) throw std::system_error(errno, std::generic_category(), "open the state directory");
  const uint64_t virtual_size = inspect_qcow2(image_fd, c.image, kInspectTimeout).virtual_size;
  if (virtual_size > c.size_gb * kGiB) throw std::runtime_error("the image grew larger than the volume");
  UniqueFd raw = create_unnamed_file(directory.get(), "the converted image");
  if (::ftruncate(raw.get(), static_cast<off_t>(virtual_size)) != 0)
    throw std::system_error(errno, std::generic_category(), "size the converted image");
  convert_qcow2_to_raw(image_fd, raw.get(), s.config.image_convert_timeout, &s.stopping);
  if (changed_ns(image_fd) != c.image_changed_ns)
    throw std::runtime_error("the image file changed after it was checked; it was not used");
  return raw;
}

// Checks the request against the types, zones, sources and image directories, and fills in
// what it left to defaults.
void validate(FlowServices& s, Context& c) {
  const ControllerConfig& config = s.config;
  uint64_t size = c.size_gb;
  if (c.volume_type.empty()) c.volume_type = config.default_volume_type;
  auto type = config.volume_types.find(c.volume_type);
  if (type == config.volume_types.end()) not_found("Volume type " + c.volume_type + " could not be found.");
  // Asked for, or implied by the type; a copy of encrypted data inherits its encryption.
  bool encrypted = type->second.encrypted || (c.encryption_asked && c.encryption_wanted);

  if (!c.snapshot_id.empty() + !c.source_volid.empty() + !c.image.empty() > 1)
    bad_request("Give at most one source: snapshot_id, source_volid or imageRef.");
  std::optional<Volume> source;  // whose data (and key) the new volume starts from
  if (!c.snapshot_id.empty()) {
    auto snap = s.store.find_snapshot(c.snapshot_id);
    if (!snap || snap->project != c.project) not_found("Snapshot " + c.snapshot_id + " could not be found.");
    if (size == 0) size = snap->size_gb;  // no size given: the snapshot's
    if (snap->status != SnapshotStatus::available)
      bad_request("Snapshot " + c.snapshot_id + " is " + std::string(to_string(snap->status)) +
                  "; it must be available.");
    if (size < snap->size_gb)
      bad_request("Volume size " + std::to_string(size) + " GiB is smaller than the snapshot's " +
                  std::to_string(snap->size_gb) + " GiB.");
    c.only_pool = snap->pool;
    source = s.store.find_volume(snap->volume_id);
  } else if (!c.source_volid.empty()) {
    source = s.store.find_volume(c.source_volid);
    if (!source || source->project != c.project) not_found("Volume " + c.source_volid + " could not be found.");
    if (size == 0) size = source->size_gb;
    if (source->status != VolumeStatus::available && source->status != VolumeStatus::in_use)
      bad_request("Source volume " + c.source_volid + " is " + std::string(to_string(source->status)) +
                  "; it must be available or in-use.");
    if (size < source->size_gb)
      bad_request("Volume size " + std::to_string(size) + " GiB is smaller than the source volume's " +
                  std::to_string(source->size_gb) + " GiB.");
    c.only_pool = source->pool;
  } else if (!c.image.empty()) {
    // Opened now, once: the copy reads this descriptor, whatever happens to the path later.
    OpenedImage opened = s.images.open(c.image, c.project);
    uint64_t content = opened.size;  // the bytes the volume will hold
    const ImageFormat format = detect_image_format(opened.fd.get());
    if (format == ImageFormat::qcow2) {
      c.image_changed_ns = changed_ns(opened.fd.get());
      content = inspect_qcow2(opened.fd.get(), c.image, kInspectTimeout).virtual_size;
    }
    c.image_format = std::string(to_string(format));
    const uint64_t need = gib_for(content + (encrypted ? kLuksHeaderBytes : 0));
    if (size == 0) size = need;
    if (size < need)
      bad_request("Image " + c.image + " holds " + std::to_string(content) + " bytes" +
                  (format == ImageFormat::qcow2 ? " (its virtual size)" : "") + "; the volume must be at least " +
                  std::to_string(need) + " GiB.");
    c.image_handle = s.hold_image(std::move(opened));
  }
  if (size == 0) bad_request("Volume size must be a whole number of GiB, at least 1.");
  c.size_gb = size;

  // A copy stays in its source's zone unless told otherwise (it is bound to the source's pool).
  if (c.availability_zone.empty())
    c.availability_zone = source ? source->availability_zone : config.default_availability_zone;
  bool known = false;
  for (const auto& [name, p] : s.pools()) known = known || p->config().availability_zone == c.availability_zone;
  if (!known) bad_request("Availability zone '" + c.availability_zone + "' is invalid.");

  if (source && !type->second.encrypted && !c.encryption_asked) encrypted = source->encrypted;
  c.encrypted = encrypted;
  if (encrypted && !s.key_wrap) bad_request("Encrypted volumes need the controller's master key file.");
  if (source) {
    if (source->encrypted != encrypted)
      bad_request(std::string("A volume made from ") + (source->encrypted ? "an encrypted" : "a plain") +
                  " source must be " + (source->encrypted ? "encrypted" : "plain") + " as well.");
    c.key_source = source->id;
  }
}

void create_db_entry(FlowServices& s, Context& c) {
  Volume v;
  v.id = c.volume_id;
  v.project = c.project;
  v.name = c.name;
  v.description = c.description;
  v.size_gb = c.size_gb;
  v.status = VolumeStatus::creating;
  v.availability_zone = c.availability_zone;
  v.volume_type = c.volume_type;
  v.snapshot_id = c.snapshot_id;
  v.source_volid = c.source_volid;
  v.image = c.image;
  v.encrypted = c.encrypted;
  v.metadata = c.metadata;
  s.store.insert_volume(v);
  // The other half of the checks in the deletes' mark_deleting: a source being deleted (or
  // gone) since validate is not copied. Each side looks at the other's row after writing
  // its own, so of two racing requests at least one sees the other and is refused.
  if (!v.source_volid.empty()) {
    auto source = s.store.find_volume(v.source_volid);
    if (!source || source->status == VolumeStatus::deleting || source->status == VolumeStatus::error_deleting)
      bad_request("Source volume " + v.source_volid + " is being deleted; it cannot be copied.");
    if (source->status == VolumeStatus::restoring_backup)
      bad_request("Source volume " + v.source_volid + " is being restored from a backup; it cannot be copied.");
  }
  if (!v.snapshot_id.empty()) {
    auto snap = s.store.find_snapshot(v.snapshot_id);
    if (!snap || snap->status == SnapshotStatus::deleting || snap->status == SnapshotStatus::error_deleting)
      bad_request("Snapshot " + v.snapshot_id + " is being deleted; no volume can be made from it.");
  }
}

void generate_key(FlowServices& s, Context& c) {
  if (!c.encrypted) return;
  crypto::SecureBytes passphrase;
  if (!c.key_source.empty()) {
    // A copy of an encrypted volume keeps its key: its data is encrypted with it.
    auto source = s.store.find_volume(c.key_source);
    if (!source) throw std::runtime_error("source volume " + c.key_source + " disappeared");
    passphrase = s.key_wrap->unwrap(source->wrapped_key, source->id);
  } else {
    passphrase = random_passphrase();
  }
  auto wrapped = s.key_wrap->wrap(passphrase, c.volume_id);
  s.store.update_volume(c.volume_id, [&](Volume& v) { v.wrapped_key = wrapped; });
}

void create_on_pool(FlowServices& s, Context& c) {
  const std::string& id = c.volume_id;
  Pool& p = s.pool(c.pool);
  const uint64_t bytes = c.size_gb * kGiB;
  auto progress = s.progress_reporter(id);
  if (!c.snapshot_id.empty()) {
    p.create_volume_from_snapshot(id, c.snapshot_id, bytes, progress);
  } else if (!c.source_volid.empty()) {
    p.clone_volume(id, c.source_volid, bytes, progress);
  } else if (!c.image.empty() && !c.encrypted) {
    auto image = s.held_image(c.image_handle);
    UniqueFd raw;
    if (c.image_format == "qcow2") raw = converted_to_raw(s, c, image->fd.get());
    p.create_volume_from_file(id, raw ? raw.get() : image->fd.get(), bytes, progress);
  } else {
    p.create_volume(id, bytes);
    if (c.encrypted) {
      auto volume = s.store.find_volume(id);
      auto passphrase = s.key_wrap->unwrap(volume->wrapped_key, id);
      std::shared_ptr<backends::BlockDevice> device = p.open_volume(id);
      auto container = crypto::LuksContainer::format(*device, s.config.luks, passphrase);
      if (!c.image.empty()) {
        auto image = s.held_image(c.image_handle);
        UniqueFd raw;
        if (c.image_format == "qcow2") raw = converted_to_raw(s, c, image->fd.get());
        crypto::LuksDevice plain(device, container.unlock(passphrase));
        copy_file_into(raw ? raw.get() : image->fd.get(), plain, progress);
      }
    }
  }
}

}  // namespace

std::vector<Task<Context>> CreateVolumeFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) { validate(s, c); },
                   [&s](Context& c) { s.release_image(c.image_handle); }});

  tasks.push_back(reserve_quota_task<Context>(s, [](const Context& c) {
    return QuotaDeltas{{kQuotaVolumes, 1}, {kQuotaGigabytes, static_cast<int64_t>(c.size_gb)}};
  }));

  tasks.push_back({"create_db_entry", [&s](Context& c) { create_db_entry(s, c); }, [&s](Context& c) {
    if (!s.store.find_volume(c.volume_id)) return;
    if (!c.outcome.accepted) {
      s.store.delete_volume(c.volume_id);  // the caller got an error, never this id
      return;
    }
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      v.status = VolumeStatus::error;
      v.error_message = c.outcome.error;
    });
  }});

  tasks.push_back(commit_quota_task(s, &Context::volume_id));

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"schedule", [&s](Context& c) {
    ScheduleRequest request;
    request.size_gb = c.size_gb;
    request.availability_zone = c.availability_zone;
    request.extra_specs = s.config.volume_types.at(c.volume_type).extra_specs;
    request.only_pool = c.only_pool;
    if (c.encrypted) request.extra_specs["encryption_support"] = "true";
    c.pool = s.scheduler.choose(s.pool_states(), request);
    s.store.update_volume(c.volume_id, [&](Volume& v) { v.pool = c.pool; });
    spdlog::info("volume {}: scheduled to pool {}", c.volume_id, c.pool);
  }, [&s](Context& c) {
    if (s.store.find_volume(c.volume_id)) s.store.update_volume(c.volume_id, [](Volume& v) { v.pool.clear(); });
  }});

  tasks.push_back({"generate_key", [&s](Context& c) { generate_key(s, c); }, [&s](Context& c) {
    if (s.store.find_volume(c.volume_id))
      s.store.update_volume(c.volume_id, [](Volume& v) { v.wrapped_key.clear(); });
  }});

  tasks.push_back({"create_on_pool", [&s](Context& c) {
    create_on_pool(s, c);
    s.release_image(c.image_handle);
  }, [&s](Context& c) {
    s.release_image(c.image_handle);
    s.clear_progress(c.volume_id);
    if (!c.pool.empty() && s.has_pool(c.pool)) s.pool(c.pool).delete_volume(c.volume_id);
  }});

  tasks.push_back({"finish", [&s](Context& c) {
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      if (v.status != VolumeStatus::creating) return;  // run again by recovery: already done
      require_transition("volume " + c.volume_id, v.status, VolumeStatus::available);
      v.status = VolumeStatus::available;
      v.error_message.clear();
    });
    s.clear_progress(c.volume_id);
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
