#include "controller/volume_service.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "controller/api/api_error.hpp"
#include "controller/flows/create_attachment.hpp"
#include "controller/flows/create_backup.hpp"
#include "controller/flows/delete_backup.hpp"
#include "controller/flows/restore_backup.hpp"
#include "controller/flows/create_snapshot.hpp"
#include "controller/flows/create_volume.hpp"
#include "controller/flows/delete_attachment.hpp"
#include "controller/flows/delete_snapshot.hpp"
#include "controller/flows/delete_volume.hpp"
#include "controller/flows/extend_volume.hpp"
#include "controller/flows/update_attachment.hpp"
#include "controller/flows/upload_volume.hpp"
#include "controller/metrics/controller_metrics.hpp"

namespace volgate::controller {

VolumeService::VolumeService(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
                             std::optional<KeyWrap> key_wrap, ServiceOptions options)
    : config_(config),
      store_(store),
      options_(std::move(options)),
      services_(config_, store, std::move(pools), std::move(key_wrap), options_.before_task) {
  if (!options_.run_inline)
    for (unsigned i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

VolumeService::~VolumeService() { stop(); }

void VolumeService::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_flag_ = true;
  }
  services_.stopping = true;
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

template <class F>
void VolumeService::start(const std::string& resource_id, typename F::Context context) {
  auto flow = std::make_shared<Flow<typename F::Context>>(store_, F::kind, resource_id, F::tasks(services_),
                                                          std::move(context), services_.before_task);
  flow->run_through(F::answer_after);  // failures here are the caller's (400, 404, 409, 413)
  if (flow->finished()) return;
  // From here on the caller has an answer; failures show in the resource's status.
  flow->context().outcome.accepted = true;
  run_in_background([flow] {
    try {
      flow->run();
    } catch (const std::exception&) {
      // Already logged and reverted by the flow; the status says what happened.
    }
  });
}

std::vector<PoolReport> VolumeService::pools() {
  std::vector<PoolReport> out;
  for (auto& s : services_.pool_states()) out.push_back({s, services_.pool(s.name).config().driver});
  return out;
}

std::optional<double> VolumeService::progress(const std::string& volume_id) { return services_.progress(volume_id); }

std::string VolumeService::export_target(const Volume& volume) {
  if (!services_.has_pool(volume.pool)) return {};
  return gateway::format_backend(services_.pool(volume.pool).export_spec(volume.id));
}

// ------------------------------------------------------------------------------ reads

Volume VolumeService::get_volume(const std::string& project, const std::string& id) {
  return services_.get_volume(project, id);
}

std::optional<std::string> VolumeService::owner_of(std::string_view kind, const std::string& id) {
  if (kind == "volumes")
    if (auto v = store_.find_volume(id)) return v->project;
  if (kind == "snapshots")
    if (auto s = store_.find_snapshot(id)) return s->project;
  if (kind == "attachments")
    if (auto a = store_.find_attachment(id)) return a->project;
  if (kind == "backups")
    if (auto b = store_.find_backup(id)) return b->project;
  return std::nullopt;
}

std::vector<Volume> VolumeService::list_volumes(const std::optional<std::string>& project) {
  return project ? store_.list_volumes(*project) : store_.all_volumes();
}

Snapshot VolumeService::get_snapshot(const std::string& project, const std::string& id) {
  return services_.get_snapshot(project, id);
}

std::vector<Snapshot> VolumeService::list_snapshots(const std::optional<std::string>& project) {
  return project ? store_.list_snapshots(*project) : store_.all_snapshots();
}

// ------------------------------------------------------------------------------ names and metadata
// Plain row updates: no flow, since nothing outside the database changes.

Volume VolumeService::update_volume(const std::string& project, const std::string& id,
                                    const ResourceChanges& changes) {
  services_.get_volume(project, id);  // 404 for another project's
  return store_.update_volume(id, [&](Volume& v) {
    if (changes.name) v.name = *changes.name;
    if (changes.description) v.description = *changes.description;
    if (changes.metadata) v.metadata = *changes.metadata;
  });
}

Metadata VolumeService::set_volume_metadata(const std::string& project, const std::string& id,
                                            const Metadata& metadata, bool merge, const std::string& if_match) {
  services_.get_volume(project, id);
  return store_
      .update_volume(id,
                     [&](Volume& v) {
                       // Checked inside the row's transaction: no other change can come between.
                       if (!if_match.empty() && !etag_matches(if_match, metadata_etag(v.metadata)))
                         throw ApiError(ApiError::Kind::precondition_failed,
                                        "The metadata of volume " + id + " changed since it was read (If-Match).");
                       if (!merge) v.metadata.clear();
                       for (const auto& [key, value] : metadata) v.metadata[key] = value;
                     })
      .metadata;
}

void VolumeService::delete_volume_metadata(const std::string& project, const std::string& id,
                                           const std::string& key) {
  services_.get_volume(project, id);
  store_.update_volume(id, [&](Volume& v) {
    if (v.metadata.erase(key) == 0) not_found("Volume " + id + " has no metadata key '" + key + "'.");
  });
}

Snapshot VolumeService::update_snapshot(const std::string& project, const std::string& id,
                                        const ResourceChanges& changes) {
  services_.get_snapshot(project, id);
  return store_.update_snapshot(id, [&](Snapshot& s) {
    if (changes.name) s.name = *changes.name;
    if (changes.description) s.description = *changes.description;
  });
}

QuotaUsage VolumeService::quota_usage(const std::string& project) {
  return store_.quota_usage(project, config_.default_quotas);
}

void VolumeService::set_quota_limit(const std::string& project, const std::string& resource, int64_t limit) {
  if (!config_.default_quotas.count(resource)) bad_request("Unknown quota resource '" + resource + "'.");
  if (limit < -1) bad_request("Quota limit for " + resource + " must be -1 (unlimited) or more.");
  store_.set_quota_limit(project, resource, limit);
}

// ------------------------------------------------------------------------------ changes

Volume VolumeService::create_volume(const CreateVolumeRequest& r) {
  if (!r.backup_id.empty()) return create_volume_from_backup(r);
  CreateVolumeContext c;
  c.volume_id = new_uuid();
  c.project = r.project;
  c.name = r.name;
  c.description = r.description;
  c.size_gb = r.size_gb;
  c.volume_type = r.volume_type;
  c.availability_zone = r.availability_zone;
  c.snapshot_id = r.snapshot_id;
  c.source_volid = r.source_volid;
  c.image = r.image;
  c.metadata = r.metadata;
  c.encryption_asked = r.encrypted.has_value();
  c.encryption_wanted = r.encrypted.value_or(false);
  const std::string id = c.volume_id;
  start<CreateVolumeFlow>(id, std::move(c));
  return *store_.find_volume(id);
}

// A restore to a new volume that takes the request's size, type, zone, name and metadata.
Volume VolumeService::create_volume_from_backup(const CreateVolumeRequest& r) {
  if (!r.snapshot_id.empty() || !r.source_volid.empty() || !r.image.empty())
    bad_request("A volume is made from one source: a backup, a snapshot, a volume or an image.");
  if (r.encrypted)
    bad_request("A volume made from a backup is encrypted when the backup's volume was; leave 'encrypted' out.");
  RestoreBackupContext c{.backup_id = r.backup_id, .project = r.project, .volume_id = new_uuid(), .name = r.name};
  c.new_volume = true;
  c.requested = true;
  c.description = r.description;
  c.metadata = r.metadata;
  c.size_gb = r.size_gb;
  c.volume_type = r.volume_type;
  c.availability_zone = r.availability_zone;
  const std::string id = c.volume_id;
  start<RestoreBackupFlow>(id, std::move(c));
  return *store_.find_volume(id);
}

Volume VolumeService::extend_volume(const std::string& project, const std::string& id, uint64_t new_size_gb) {
  start<ExtendVolumeFlow>(id, {.volume_id = id, .project = project, .new_size_gb = new_size_gb});
  return *store_.find_volume(id);
}

void VolumeService::delete_volume(const std::string& project, const std::string& id, bool force) {
  start<DeleteVolumeFlow>(id, {.volume_id = id, .project = project, .force = force});
}

std::string VolumeService::upload_volume_to_image(const UploadImageRequest& r) {
  const std::string image_id = new_uuid();
  start<UploadVolumeFlow>(r.volume_id, {.volume_id = r.volume_id,
                                        .project = r.project,
                                        .image_id = image_id,
                                        .image_name = r.image_name,
                                        .disk_format = r.disk_format,
                                        .container_format = r.container_format,
                                        .visibility = r.visibility,
                                        .is_protected = r.is_protected,
                                        .force = r.force});
  return image_id;
}

Snapshot VolumeService::create_snapshot(const std::string& project, const std::string& volume_id,
                                        const std::string& name, const std::string& description, bool force) {
  const std::string id = new_uuid();
  start<CreateSnapshotFlow>(id, {.snapshot_id = id, .project = project, .volume_id = volume_id, .name = name,
                                 .description = description, .force = force});
  return *store_.find_snapshot(id);
}

void VolumeService::delete_snapshot(const std::string& project, const std::string& id, bool force) {
  start<DeleteSnapshotFlow>(id, {.snapshot_id = id, .project = project, .force = force});
}

// ------------------------------------------------------------------------------ backups

Backup VolumeService::create_backup(const std::string& project, const std::string& volume_id,
                                    const std::string& name, const std::string& description, bool incremental,
                                    bool force) {
  const std::string id = new_uuid();
  // Journaled under the volume it reads, so that an admin's reset or force-delete of the volume
  // sees the operation in progress (refuse_while_busy).
  start<CreateBackupFlow>(volume_id, {.backup_id = id, .project = project, .volume_id = volume_id, .name = name,
                               .description = description, .incremental = incremental, .force = force});
  return *store_.find_backup(id);
}

void VolumeService::delete_backup(const std::string& project, const std::string& id, bool force) {
  start<DeleteBackupFlow>(id, {.backup_id = id, .project = project, .force = force});
}

std::string VolumeService::restore_backup(const std::string& project, const std::string& id,
                                          const std::string& volume_id, const std::string& name) {
  RestoreBackupContext c{.backup_id = id, .project = project, .volume_id = volume_id, .name = name};
  c.new_volume = volume_id.empty();
  if (c.new_volume) c.volume_id = new_uuid();
  const std::string target = c.volume_id;
  start<RestoreBackupFlow>(target, std::move(c));  // journaled under the volume it writes, as above
  return target;
}

Backup VolumeService::get_backup(const std::string& project, const std::string& id) {
  return services_.get_backup(project, id);
}

std::vector<Backup> VolumeService::list_backups(const std::optional<std::string>& project) {
  return project ? store_.list_backups(*project) : store_.all_backups();
}

Backup VolumeService::update_backup(const std::string& project, const std::string& id,
                                    const ResourceChanges& changes) {
  services_.get_backup(project, id);
  return store_.update_backup(id, [&](Backup& b) {
    if (changes.name) b.name = *changes.name;
    if (changes.description) b.description = *changes.description;
  });
}

// ------------------------------------------------------------------------------ attachments

Attachment VolumeService::create_attachment(const CreateAttachmentRequest& r) {
  CreateAttachmentContext c;
  c.attachment_id = new_uuid();
  c.project = r.project;
  c.volume_id = r.volume_id;
  c.instance_uuid = r.instance_uuid;
  c.step.read_only = r.read_only;
  c.step.connector = r.connector;
  c.step.host = r.host;
  const std::string id = c.attachment_id;
  start<CreateAttachmentFlow>(id, std::move(c));
  return *store_.find_attachment(id);
}

Attachment VolumeService::update_attachment(const std::string& project, const std::string& id,
                                            const std::string& connector, const std::string& host) {
  UpdateAttachmentContext c{.attachment_id = id, .project = project};
  c.step.connector = connector;
  c.step.host = host;
  start<UpdateAttachmentFlow>(id, std::move(c));
  return *store_.find_attachment(id);
}

Attachment VolumeService::complete_attachment(const std::string& project, const std::string& id) {
  services_.get_volume(project, controller::get_attachment(services_, project, id).volume_id);
  start<CompleteAttachmentFlow>(id, {.attachment_id = id, .project = project});
  return *store_.find_attachment(id);
}

std::vector<Attachment> VolumeService::delete_attachment(const std::string& project, const std::string& id,
                                                        AttachmentDeleter deleter) {
  const Attachment attachment = controller::get_attachment(services_, project, id);
  const std::string volume_id = attachment.volume_id;
  if (deleter == AttachmentDeleter::client && !attachment.instance_uuid.empty())
    // The mapping's own attachment, or one it is about to record (an attach between its
    // create_attachment and connect); another attachment of a multiattach volume is the client's.
    if (auto m = store_.find_mapping(attachment.instance_uuid, volume_id);
        m && (m->attachment_id == id || m->attachment_id.empty()))
      conflict("Attachment " + id + " belongs to server " + m->server_id + "'s volume attachment; detach volume " +
               volume_id + " through the compute API (DELETE /v2.1/servers/" + m->server_id +
               "/os-volume_attachments/" + volume_id + ").");
  start<DeleteAttachmentFlow>(id, {.attachment_id = id, .project = project});
  return store_.attachments_of(volume_id);
}

Attachment VolumeService::get_attachment(const std::string& project, const std::string& id) {
  return controller::get_attachment(services_, project, id);
}

std::vector<Attachment> VolumeService::list_attachments(const std::optional<std::string>& project) {
  return project ? store_.list_attachments(*project) : store_.all_attachments();
}

std::vector<Attachment> VolumeService::attachments_of(const std::string& volume_id) {
  return store_.attachments_of(volume_id);
}

bool VolumeService::multiattach(const Volume& volume) const { return multiattach_allowed(services_, volume); }

std::string VolumeService::nbd_socket() const {
  return services_.gateway ? services_.gateway->nbd_socket() : std::string();
}

void VolumeService::reserve_volume(const std::string& project, const std::string& id) {
  services_.get_volume(project, id);
  store_.update_volume(id, [&](Volume& v) {
    require_transition("volume " + id, v.status, VolumeStatus::reserved);
    v.status = VolumeStatus::reserved;
  });
}

void VolumeService::unreserve_volume(const std::string& project, const std::string& id) {
  services_.get_volume(project, id);
  store_.update_volume_attachments(id, [&](Store::VolumeAttachments& state) {
    if (state.volume.status != VolumeStatus::reserved)
      conflict("Volume " + id + " is " + std::string(to_string(state.volume.status)) + ", not reserved.");
    state.volume.status = status_for_attachments(state.attachments);
  });
}

void VolumeService::begin_detaching(const std::string& project, const std::string& id) {
  services_.get_volume(project, id);
  store_.update_volume(id, [&](Volume& v) {
    if (v.status != VolumeStatus::in_use)
      conflict("Volume " + id + " is " + std::string(to_string(v.status)) + "; only an in-use volume can begin detaching.");
    v.status = VolumeStatus::detaching;
  });
}

void VolumeService::roll_detaching(const std::string& project, const std::string& id) {
  services_.get_volume(project, id);
  store_.update_volume_attachments(id, [&](Store::VolumeAttachments& state) {
    // Cinder ignores a roll-back of a volume that is not detaching; so does volgate.
    if (state.volume.status == VolumeStatus::detaching) state.volume.status = status_for_attachments(state.attachments);
  });
}

void VolumeService::force_detach(const std::string& project, const std::string& id, const std::string& attachment_id) {
  services_.get_volume(project, id);
  std::vector<std::string> ids;
  for (const auto& a : store_.attachments_of(id))
    if (attachment_id.empty() || a.id == attachment_id) ids.push_back(a.id);
  if (!attachment_id.empty() && ids.empty())
    not_found("Volume " + id + " has no attachment " + attachment_id + ".");
  for (const auto& a : ids) start<DeleteAttachmentFlow>(a, {.attachment_id = a, .project = project});
  // A volume left detaching by os-begin_detaching with nothing attached any more is available.
  store_.update_volume_attachments(id, [](Store::VolumeAttachments& state) { settle_volume_status(state); });
}

// ------------------------------------------------------------------------------ admin repairs

void VolumeService::reset_volume_status(const std::string& project, const std::string& id,
                                        std::optional<VolumeStatus> status, bool detach) {
  services_.get_volume(project, id);
  std::vector<std::string> busy_ids = {id};
  for (const auto& a : store_.attachments_of(id)) busy_ids.push_back(a.id);
  services_.refuse_while_busy("Volume " + id, busy_ids);
  if (detach) force_detach(project, id, {});
  store_.update_volume_attachments(id, [&](Store::VolumeAttachments& state) {
    const VolumeStatus before = state.volume.status;
    state.volume.status = status.value_or(detach ? status_for_attachments(state.attachments) : before);
    // The message explained an error the record no longer claims.
    if (state.volume.status != VolumeStatus::error && state.volume.status != VolumeStatus::error_deleting)
      state.volume.error_message.clear();
    spdlog::warn("volume {}: status reset by an admin from {} to {}{}", id, to_string(before),
                 to_string(state.volume.status), detach ? " (attachments deleted)" : "");
  });
}

void VolumeService::reset_snapshot_status(const std::string& project, const std::string& id, SnapshotStatus status) {
  services_.get_snapshot(project, id);
  services_.refuse_while_busy("Snapshot " + id, {id});
  store_.update_snapshot(id, [&](Snapshot& s) {
    spdlog::warn("snapshot {}: status reset by an admin from {} to {}", id, to_string(s.status), to_string(status));
    s.status = status;
    if (status != SnapshotStatus::error && status != SnapshotStatus::error_deleting) s.error_message.clear();
  });
}

void VolumeService::reset_backup_status(const std::string& project, const std::string& id, BackupStatus status) {
  services_.get_backup(project, id);
  if (status != BackupStatus::available && status != BackupStatus::error)
    bad_request("A backup's status can be reset to available or error, not " + std::string(to_string(status)) + ".");
  services_.refuse_while_backup_busy(id);
  store_.update_backup(id, [&](Backup& b) {
    spdlog::warn("backup {}: status reset by an admin from {} to {}", id, to_string(b.status), to_string(status));
    b.status = status;
    b.restore_volume_id.clear();
    if (status != BackupStatus::error) b.error_message.clear();
  });
}

ExportRepairs VolumeService::reconcile_exports() {
  ExportRepairs repairs = controller::reconcile_exports(services_);
  ControllerMetrics::process().export_repairs(repairs);
  return repairs;
}

std::set<std::string> VolumeService::served_exports() {
  if (!services_.gateway)
    throw ApiError(ApiError::Kind::service_unavailable, "This controller has no gateway to serve volumes.");
  std::set<std::string> names;
  try {
    for (const auto& e : services_.gateway->list()) names.insert(e.name);
  } catch (const std::exception& e) {
    throw ApiError(ApiError::Kind::service_unavailable, std::string("The gateway does not answer: ") + e.what());
  }
  return names;
}

// ------------------------------------------------------------------------------ recovery

template <class F>
void VolumeService::recover_one(const FlowRecord& record) {
  Flow<typename F::Context> flow(store_, record, F::tasks(services_));
  flow.recover(F::on_restart == OnRestart::resume || flow.was_in_last_task());
}

void VolumeService::recover(const std::vector<std::string>& left_to_others) {
  using Recovery = void (VolumeService::*)(const FlowRecord&);
  static const std::map<std::string, Recovery> recoveries = {
      {CreateVolumeFlow::kind, &VolumeService::recover_one<CreateVolumeFlow>},
      {ExtendVolumeFlow::kind, &VolumeService::recover_one<ExtendVolumeFlow>},
      {UploadVolumeFlow::kind, &VolumeService::recover_one<UploadVolumeFlow>},
      {DeleteVolumeFlow::kind, &VolumeService::recover_one<DeleteVolumeFlow>},
      {CreateSnapshotFlow::kind, &VolumeService::recover_one<CreateSnapshotFlow>},
      {DeleteSnapshotFlow::kind, &VolumeService::recover_one<DeleteSnapshotFlow>},
      {CreateAttachmentFlow::kind, &VolumeService::recover_one<CreateAttachmentFlow>},
      {UpdateAttachmentFlow::kind, &VolumeService::recover_one<UpdateAttachmentFlow>},
      {CompleteAttachmentFlow::kind, &VolumeService::recover_one<CompleteAttachmentFlow>},
      {DeleteAttachmentFlow::kind, &VolumeService::recover_one<DeleteAttachmentFlow>},
      {CreateBackupFlow::kind, &VolumeService::recover_one<CreateBackupFlow>},
      {RestoreBackupFlow::kind, &VolumeService::recover_one<RestoreBackupFlow>},
      {DeleteBackupFlow::kind, &VolumeService::recover_one<DeleteBackupFlow>},
  };
  for (const FlowRecord& record : store_.journal_unfinished()) {
    auto it = recoveries.find(record.kind);
    if (std::find(left_to_others.begin(), left_to_others.end(), record.kind) != left_to_others.end()) continue;
    if (it == recoveries.end()) {
      spdlog::error("flow {}: unknown flow kind '{}'; left in the journal", record.id, record.kind);
      continue;
    }
    (this->*it->second)(record);
  }
  sweep_stuck_resources();
  settle_attachments();
}

// After the journal is replayed no attachment flow runs: an attachment still `detaching` was
// being deleted by a flow whose journal entry is gone, and a volume's status is what its
// attachments say (an os-reserve or os-begin_detaching of the previous run is forgotten, as
// Nova retries those). Exports left behind go at the first export check.
void VolumeService::settle_attachments() {
  for (const auto& v : store_.all_volumes()) {
    if (v.status != VolumeStatus::reserved && v.status != VolumeStatus::attaching &&
        v.status != VolumeStatus::detaching && v.status != VolumeStatus::in_use)
      continue;
    store_.update_volume_attachments(v.id, [&](Store::VolumeAttachments& state) {
      const VolumeStatus before = state.volume.status;
      std::erase_if(state.attachments, [](const Attachment& a) { return a.status == AttachmentStatus::detaching; });
      settle_volume_status(state);
      if (state.volume.status != before)
        spdlog::warn("volume {} was {} with no operation in progress; its attachments make it {}", v.id,
                     to_string(before), to_string(state.volume.status));
    });
  }
}

// A resource in a transient state with no flow to move it on (e.g. its journal entry could
// not be written) would stay there forever: give it a status an operator can act on.
void VolumeService::sweep_stuck_resources() {
  for (const auto& v : store_.all_volumes()) {
    if (v.status != VolumeStatus::backing_up && v.status != VolumeStatus::uploading) continue;
    // Only read by the backup or upload that is gone, never written: nothing to undo, and its
    // attachments say what it is (none for a backup: available).
    store_.update_volume_attachments(v.id, [&](Store::VolumeAttachments& state) {
      state.volume.status = status_for_attachments(state.attachments);
      spdlog::warn("volume {} was {} with no operation in progress; now {}", v.id, to_string(v.status),
                   to_string(state.volume.status));
    });
  }
  for (const auto& v : store_.all_volumes()) {
    if (v.status != VolumeStatus::creating && v.status != VolumeStatus::extending &&
        v.status != VolumeStatus::deleting && v.status != VolumeStatus::restoring_backup)
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
  for (const auto& b : store_.all_backups()) {
    if (b.status != BackupStatus::creating && b.status != BackupStatus::restoring &&
        b.status != BackupStatus::deleting)
      continue;
    // A restore only read it; a create or delete may have left part of its data.
    const BackupStatus now = b.status == BackupStatus::restoring ? BackupStatus::available : BackupStatus::error;
    spdlog::warn("backup {} was {} with no operation in progress; now {}", b.id, to_string(b.status), to_string(now));
    store_.update_backup(b.id, [now](Backup& x) {
      x.status = now;
      x.restore_volume_id.clear();
      x.error_message = "the controller stopped before the operation finished";
    });
  }
}

}  // namespace volgate::controller
