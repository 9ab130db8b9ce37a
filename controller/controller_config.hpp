#pragma once
// The controller's configuration: where its state lives, what it listens on, its pools,
// volume types, quotas and scheduler settings. Read from a JSON file (see README, section
// "Controller"), or the embedded default for `volgate controller --state-dir DIR`.
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "controller/api/api_server_limits.hpp"
#include "controller/api/caller.hpp"
#include "controller/backup/backup_repository.hpp"
#include "controller/pools/pool.hpp"
#include "controller/domain/quota.hpp"
#include "controller/pools/scheduler.hpp"
#include "controller/virt/libvirt_driver.hpp"
#include "crypto/luks_container.hpp"

namespace volgate::controller {

struct VolumeType {
  std::string name;
  std::string description;
  bool encrypted = false;
  // Capabilities a pool must offer (matched by the capabilities filter).
  std::map<std::string, std::string> extra_specs;
};

// The gateway that serves attached volumes on this host (`volgate serve --control`).
struct GatewayConfig {
  // Its control socket; default STATE_DIR/run/gateway.sock. "none": no gateway, so attachments
  // can be reserved but not connected (503).
  std::string control_socket;
  // Its NBD socket, which attachments' connection info names; default STATE_DIR/run/nbd.sock.
  std::string nbd_socket;
  // Group given the NBD socket (mode 0660) so that QEMU can connect. Default: libvirt-qemu when
  // that group exists and this process may give it; "" for none.
  std::string socket_group = "auto";
  // Start the gateway (`volgate controller --gateway`) when none answers on the control socket.
  bool start = false;
  std::string log_file;  // its output, when started here; default STATE_DIR/gateway.log
  // How often the gateway is asked whether it restarted (its exports are then put back), and
  // how often its exports are compared with the attachments anyway.
  std::chrono::milliseconds check_interval{500};
  std::chrono::milliseconds repair_interval{std::chrono::seconds(30)};
};

// One API token beyond `token_file` (the `tokens` list): the project it acts in and its role,
// and the token itself in a file, or only its SHA-256 digest (64 hex digits) in the config.
struct ApiTokenConfig {
  std::string project;
  Role role = Role::member;
  std::string token_file;
  std::string token_sha256;
};

struct ControllerConfig {
  std::string state_dir;
  std::string database;         // default: STATE_DIR/controller.db
  std::string unix_socket;      // default: STATE_DIR/controller.sock; "none": TCP only
  std::string tcp_listen;       // HOST:PORT, optional
  std::string metrics;          // [HOST:]PORT of the Prometheus endpoint, optional (as --metrics)
  // x509 for the TCP listener (ca-cert.pem, server-cert.pem, server-key.pem, as `volgate serve
  // --tls-certificates`): HTTPS. Without it the TCP listener must be on a loopback address.
  std::string tls_certificates;
  std::string token_file;       // default: STATE_DIR/token, generated on first start: an admin of
                                // project "default" (where Nova's bare /v2.1 URLs act)
  std::vector<ApiTokenConfig> tokens;  // more tokens, each with its project and role
  std::string master_key_file;  // default: STATE_DIR/master.key, generated on first start
  // Where `imageRef` may take image files from; default: STATE_DIR/images (created at start).
  std::vector<std::string> image_dirs;
  // Where os-volume_upload_image writes images: one of image_dirs (so that an upload is an
  // imageRef at once); default: the first of them.
  std::string image_upload_dir;
  // How long one qemu-img conversion (qcow2 to raw for a create, raw to qcow2 for an upload) may
  // take before it is stopped and the operation fails.
  std::chrono::seconds image_convert_timeout{3600};
  std::string default_availability_zone = "nova";
  std::string default_volume_type = "default";
  QuotaDeltas default_quotas{{kQuotaVolumes, 10},  {kQuotaSnapshots, 10},        {kQuotaGigabytes, 1000},
                             {kQuotaBackups, 10}, {kQuotaBackupGigabytes, 1000}};
  // Where backups are kept (the config's "backups" block); default directory STATE_DIR/backups.
  BackupRepositoryConfig backups;
  ApiServerLimits api_limits;
  GatewayConfig gateway;
  // The hypervisor whose domains are the servers volumes attach to; "none" (stored empty): no
  // servers API.
  std::string libvirt_uri = "qemu:///system";
  // How long a live detach waits for the guest to let a disk go (the config's "libvirt" block).
  DetachOptions libvirt_detach;
  // QEMU's NBD reconnect-delay for the disks attached (the "libvirt" block's
  // nbd_reconnect_delay; 0: none): when the gateway dies, the guest's requests wait this long for
  // it to come back instead of failing at once. Only where libvirt can carry it (9.2.0 on).
  // 10 s covers a gateway crash and its restart (under 0.4 s: bench/crash_window.sh) many times
  // over, and stays well under the 30 s after which a Linux guest's SCSI layer aborts commands.
  std::chrono::seconds nbd_reconnect_delay{10};
  // How long `os-stop` waits for a guest to shut down before powering it off (Nova's
  // shutdown_timeout).
  std::chrono::milliseconds server_shutdown_timeout{std::chrono::seconds(60)};
  // Whether a volume may be attached to a server in another availability zone (Nova's
  // [cinder] cross_az_attach); the servers here are in default_availability_zone.
  bool cross_az_attach = false;
  unsigned workers = 4;  // flows running in the background at once (copies, deletes)
  SchedulerOptions scheduler;
  std::map<std::string, VolumeType> volume_types;
  std::vector<PoolConfig> pools;
  // How encrypted volumes are formatted. The passphrases are 256 random bits, so a slow key
  // derivation adds nothing against guessing: the default is PBKDF2 at its minimum cost.
  crypto::LuksFormatOptions luks;
};

// The embedded default: everything inside `state_dir`, one file pool DIR/pool in zone "nova",
// types "default" and "encrypted".
ControllerConfig default_config(const std::string& state_dir);

// Reads a config file; `state_dir`, when not empty, overrides the file's. Relative paths in the
// file are relative to the state directory. Throws std::runtime_error naming the file and the
// offending key (unknown keys are refused, so a typo is never silently ignored).
ControllerConfig load_config(const std::string& path, const std::string& state_dir);

// libvirt-qemu (the group QEMU runs in on Debian) when it exists and this process may give it
// to a socket; empty otherwise.
std::string qemu_socket_group();

// Fills in defaults and checks the whole: pool names unique, known drivers, a default type.
void finish_config(ControllerConfig& config);

}  // namespace volgate::controller
