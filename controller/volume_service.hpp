#pragma once
// The volume service: what Cinder's API, scheduler and volume manager do together, as flows
// of tasks (controller/flows/) over a Store and a set of Pools.
//
// A mutating request runs the first tasks of its flow (validate, reserve quota, create the DB
// entry, commit quota, or mark the status: each flow names the task after which the caller is
// answered) on the caller's thread, so bad input, a quota limit or an illegal state comes back
// as an error at once; the rest (schedule, copy, delete on the pool) runs on a worker thread
// while the volume shows `creating` (with progress), `extending` or `deleting`. A failure there
// reverts the whole flow and leaves the volume in `error` (create), `available` (extend) or
// `error_deleting` (delete), with the quota usage matching what exists.
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "controller/controller_config.hpp"
#include "controller/flows/flow.hpp"
#include "controller/exports/export_reconciler.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

struct CreateVolumeRequest {
  std::string project;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;
  std::string volume_type;        // empty: the default type
  std::string availability_zone;  // empty: the default zone
  std::string snapshot_id;        // at most one source
  std::string source_volid;
  std::string image;              // imageRef: a raw or qcow2 image file in an image directory
  std::string backup_id;          // a backup to restore into the new volume (Cinder 3.47)
  std::optional<bool> encrypted;  // empty: as the volume type says
  Metadata metadata;
};

// What PUT /volumes/{id} and PUT /snapshots/{id} may change; empty fields stay as they are.
struct ResourceChanges {
  std::optional<std::string> name;
  std::optional<std::string> description;
  std::optional<Metadata> metadata;  // volumes only: replaces the whole set
};

// os-volume_upload_image: what the image is to be.
struct UploadImageRequest {
  std::string project;
  std::string volume_id;
  std::string image_name;
  std::string disk_format = "raw";  // raw or qcow2
  std::string container_format = "bare";
  std::string visibility = "private";
  bool is_protected = false;
  bool force = false;
};

struct CreateAttachmentRequest {
  std::string project;
  std::string volume_id;
  std::string instance_uuid;
  bool read_only = false;
  std::string connector;  // JSON text; empty: reserve only
  std::string host;       // the connector's host
};

struct ServiceOptions {
  BeforeTask before_task;  // failure injection for tests
  // Runs the background part of each flow on the caller's thread (unit tests); its failure
  // is handled exactly as on a worker: logged, reverted, not thrown.
  bool run_inline = false;
};

struct PoolReport {
  PoolState state;
  std::string driver;
};

class VolumeService {
 public:
  VolumeService(const ControllerConfig& config, Store& store, std::vector<std::unique_ptr<Pool>> pools,
                std::optional<KeyWrap> key_wrap, ServiceOptions options = {});
  ~VolumeService();
  VolumeService(const VolumeService&) = delete;
  VolumeService& operator=(const VolumeService&) = delete;

  // Finishes or reverts the flows a previous run left half done (see flow.hpp); call once
  // before serving requests. Flows of the kinds in `left_to_others` (the compute service's)
  // are left for their own service.
  void recover(const std::vector<std::string>& left_to_others = {});
  // Cancels running copies (their flows revert) and waits for the workers.
  void stop();
  // Waits until no flow runs in the background (tests).
  void wait_idle();

  Volume create_volume(const CreateVolumeRequest& request);
  Volume extend_volume(const std::string& project, const std::string& id, uint64_t new_size_gb);
  // `force`: an admin's os-force_delete, in any status; still refused while the volume has
  // attachments or snapshots, or while another operation works on it.
  void delete_volume(const std::string& project, const std::string& id, bool force = false);
  // Starts copying the volume into a new image in the upload directory; returns the image's id.
  std::string upload_volume_to_image(const UploadImageRequest& request);
  Volume get_volume(const std::string& project, const std::string& id);
  // Any project's volume, for views of records that name it.
  std::optional<Volume> find_volume(const std::string& id) { return store_.find_volume(id); }
  // The project that owns a volume, snapshot or attachment (`kind` "volumes", "snapshots" or
  // "attachments", as in the API's paths); nullopt when there is none by that id.
  std::optional<std::string> owner_of(std::string_view kind, const std::string& id);
  // The project's volumes; every project's with nullopt (an admin's all_tenants list).
  std::vector<Volume> list_volumes(const std::optional<std::string>& project);
  Volume update_volume(const std::string& project, const std::string& id, const ResourceChanges& changes);

  // Volume metadata. `merge`: the given keys are added or replaced, the others kept; otherwise
  // the given set replaces the whole. A non-empty `if_match` must equal the metadata's current
  // metadata_etag() (412 otherwise), so that two clients editing it cannot lose each other's
  // change. Returns the metadata as written.
  Metadata set_volume_metadata(const std::string& project, const std::string& id, const Metadata& metadata,
                               bool merge, const std::string& if_match = {});
  // 404 when the volume has no such key.
  void delete_volume_metadata(const std::string& project, const std::string& id, const std::string& key);

  Snapshot create_snapshot(const std::string& project, const std::string& volume_id, const std::string& name,
                           const std::string& description, bool force);
  void delete_snapshot(const std::string& project, const std::string& id, bool force = false);
  Snapshot get_snapshot(const std::string& project, const std::string& id);
  std::vector<Snapshot> list_snapshots(const std::optional<std::string>& project);  // nullopt: all
  Snapshot update_snapshot(const std::string& project, const std::string& id, const ResourceChanges& changes);

  // Backups (Cinder's backup API; controller/backup/ keeps their data). `incremental`: against
  // the volume's newest available backup; `force`: an in-use volume, through a snapshot.
  Backup create_backup(const std::string& project, const std::string& volume_id, const std::string& name,
                       const std::string& description, bool incremental, bool force);
  // `force` (an admin's os-force_delete): whatever its status, unless a flow works on it.
  void delete_backup(const std::string& project, const std::string& id, bool force = false);
  // POST /volumes with backup_id: a restore into a new volume of the requested size (at least
  // the backup's; by default its), type and zone (by default the backup's).
  Volume create_volume_from_backup(const CreateVolumeRequest& r);
  // Into the volume `volume_id`, or a new volume (named `name`) when it is empty. Returns the
  // target's id.
  std::string restore_backup(const std::string& project, const std::string& id, const std::string& volume_id,
                             const std::string& name);
  Backup get_backup(const std::string& project, const std::string& id);
  std::vector<Backup> list_backups(const std::optional<std::string>& project);  // nullopt: all
  Backup update_backup(const std::string& project, const std::string& id, const ResourceChanges& changes);

  // Attachments (Cinder's v3 attachment API). All run whole on the caller's thread.
  Attachment create_attachment(const CreateAttachmentRequest& request);
  // The host's connector (JSON text): the gateway serves the volume, for connection_info().
  Attachment update_attachment(const std::string& project, const std::string& id, const std::string& connector,
                               const std::string& host);
  Attachment complete_attachment(const std::string& project, const std::string& id);
  // Who deletes an attachment: a client of the attachment API, or the compute flows.
  enum class AttachmentDeleter { client, compute };
  // Returns the attachments the volume still has. A client cannot delete an attachment that a
  // server's volume attachment (block device mapping) holds (409): the guest would keep a disk
  // whose export is gone, and the volume, available again, could be attached to another server
  // while the first one still writes to it. Such a volume leaves through the compute API's
  // detach (as Cinder allows it only to Nova since OSSA-2023-003).
  std::vector<Attachment> delete_attachment(const std::string& project, const std::string& id,
                                            AttachmentDeleter deleter = AttachmentDeleter::client);
  Attachment get_attachment(const std::string& project, const std::string& id);
  std::vector<Attachment> list_attachments(const std::optional<std::string>& project);  // nullopt: all
  std::vector<Attachment> attachments_of(const std::string& volume_id);
  // Whether the volume's type lets it have more than one attachment.
  bool multiattach(const Volume& volume) const;
  // Where hosts reach exports (the gateway's NBD socket); empty without a gateway.
  std::string nbd_socket() const;

  // The volume actions Nova uses around attach and detach: plain status changes.
  void reserve_volume(const std::string& project, const std::string& id);
  void unreserve_volume(const std::string& project, const std::string& id);
  void begin_detaching(const std::string& project, const std::string& id);
  void roll_detaching(const std::string& project, const std::string& id);
  // Deletes the volume's attachment `attachment_id`, or all of them when it is empty.
  void force_detach(const std::string& project, const std::string& id, const std::string& attachment_id);

  // An admin's repairs of records that no longer say the truth (Cinder's os-reset_status): the
  // status is set as given, nothing on the pool changes. `detach` (attach_status "detached")
  // first deletes every attachment of the volume as force_detach does, so no export outlives
  // its record; the status then defaults to what the attachments left (available). Refused
  // (409) while an operation works on the volume or one of its attachments.
  void reset_volume_status(const std::string& project, const std::string& id, std::optional<VolumeStatus> status,
                           bool detach);
  void reset_snapshot_status(const std::string& project, const std::string& id, SnapshotStatus status);
  // To available or error (as Cinder allows), unless a flow works on the backup.
  void reset_backup_status(const std::string& project, const std::string& id, BackupStatus status);

  // The gateway that serves attachments (not owned); set before serving requests.
  void set_gateway(GatewayExports* gateway) { services_.gateway = gateway; }
  // One pass of the export check (export_reconciler.hpp).
  ExportRepairs reconcile_exports();
  // The names of the exports the gateway serves now. Throws ApiError 503 without a gateway or
  // when it does not answer.
  std::set<std::string> served_exports();

  QuotaUsage quota_usage(const std::string& project);
  void set_quota_limit(const std::string& project, const std::string& resource, int64_t limit);

  std::vector<PoolReport> pools();
  const std::map<std::string, VolumeType>& volume_types() const { return config_.volume_types; }
  const std::string& default_volume_type() const { return config_.default_volume_type; }
  const std::string& default_availability_zone() const { return config_.default_availability_zone; }
  const QuotaDeltas& default_quotas() const { return config_.default_quotas; }
  // Percent of the copy done, while a volume is being created from a source (or a backup
  // created or restored: by the backup's id).
  std::optional<double> progress(const std::string& volume_id);
  // How `volgate serve --export` reaches the volume ("file:PATH"), empty before it is placed.
  std::string export_target(const Volume& volume);

 private:
  // Runs flow F up to the task after which the caller is answered, then the rest on a worker.
  template <class F>
  void start(const std::string& resource_id, typename F::Context context);
  // Finishes or reverts one half-done flow of kind F found in the journal.
  template <class F>
  void recover_one(const FlowRecord& record);

  void run_in_background(std::function<void()> work);
  void worker_loop();
  void sweep_stuck_resources();
  void settle_attachments();

  ControllerConfig config_;
  Store& store_;
  ServiceOptions options_;
  FlowServices services_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> queue_;
  size_t running_ = 0;
  bool stopping_flag_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace volgate::controller
