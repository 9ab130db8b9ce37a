#pragma once
// What the controller needs of the hypervisor on its host (Nova's virt driver, cut to volumes):
// the servers (libvirt domains) and their state, the disks in them, and attaching and detaching
// a volume's NBD export as a disk. LibvirtDriver does it through libvirt's C API; unit tests
// put a fake in its place to inject failures.
#include <cstdint>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace volgate::controller {

enum class ServerState { running, paused, shut_off, other };

std::string_view to_string(ServerState state);

struct Server {
  std::string uuid;
  std::string name;
  ServerState state = ServerState::other;
  bool persistent = true;  // a transient domain has no definition to keep a disk in
  unsigned vcpus = 0;      // what Nova's flavor would say of it
  uint64_t memory_mib = 0;
  // The project that owns it (Nova's tenant): the `project` attribute of the element in
  // kServerOwnerNamespace in the domain's <metadata>; empty when it has none (admins only).
  std::string project;
};

// The namespace of volgate's element in a domain's <metadata>, e.g.
// <volgate:owner xmlns:volgate="urn:volgate:server" project="alpha"/>.
inline constexpr const char* kServerOwnerNamespace = "urn:volgate:server";

// A disk as the domain's XML has it.
struct GuestDisk {
  std::string serial;  // volgate puts the volume id here (the guest's /dev/disk/by-id)
  std::string target;  // sdb, vdb
  std::string bus;     // scsi, virtio
  std::string alias;   // libvirt's name for the device (ua-... when volgate attached it)
  std::string export_name;  // the NBD source's export, for network disks
  std::string socket;       // the NBD source's unix socket
  // The domain boots from it (its root disk): boot order 1, or the first disk of a domain
  // that boots from hd with no per-device order and no direct kernel. Nova refuses to detach
  // a root volume; so does the controller.
  bool boot = false;
};

// A volume's export to attach as a disk.
struct DiskRequest {
  std::string socket;       // the gateway's NBD unix socket
  std::string export_name;  // the export on it
  std::string serial;       // the volume id
  std::string target;       // device name in the domain: sdb, vdc
  std::string bus = "scsi";
  // On scsi, the unit on controller 0: an explicit drive address, or libvirt adds a controller
  // per disk for targets past the first few.
  unsigned scsi_unit = 0;
  bool read_only = false;
};

// What libvirt reports about domains that the controller reconciles (see DomainEventWorker).
struct DomainEvent {
  enum class Kind {
    connected,       // a (new) connection: events before it were missed; look at every server
    changed,         // the domain was undefined or stopped: it may be gone
    device_removed,  // a device left the domain (alias says which)
    io_error,        // QEMU stopped or reported an I/O error on a disk (alias, reason)
  };
  Kind kind = Kind::changed;
  std::string uuid;
  std::string alias;   // device_removed, io_error
  std::string reason;  // io_error: QEMU's reason (e.g. "enospc", or "" for EIO)
};
// Called on libvirt's event thread: it must only hand the event on, never block or call libvirt.
using DomainEventHandler = std::function<void(const DomainEvent&)>;

// libvirt refused or failed; the message is libvirt's.
class VirtError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The domain a call named is not there (any more): undefined between two calls of a flow.
class DomainNotFound : public VirtError {
 public:
  using VirtError::VirtError;
};

class VirtDriver {
 public:
  virtual ~VirtDriver() = default;

  virtual std::vector<Server> list_servers() = 0;
  // By UUID, else by name when exactly one domain has it; nullopt when none does.
  virtual std::optional<Server> find_server(const std::string& uuid_or_name) = 0;
  // The disks of the running definition (running or paused) or the persistent one.
  virtual std::vector<GuestDisk> disks(const std::string& uuid, bool persistent) = 0;
  // Attaches live when the domain runs and persistently when it has a definition.
  virtual void attach_disk(const std::string& uuid, const DiskRequest& disk) = 0;
  // Detaches the disk whose serial is `serial`, live (waiting for the guest to let it go,
  // retrying as a guest may ignore the first request) and from the definition. A disk that is
  // not there is success. Throws VirtError when the guest keeps the disk after every retry.
  virtual void detach_disk(const std::string& uuid, const std::string& serial) = 0;

  // Boots a shut-off domain (virDomainCreate). Throws VirtError with libvirt's reason (QEMU's
  // "Failed to connect" for a disk whose export is not served).
  virtual void start_server(const std::string& uuid) = 0;
  // Asks the guest to shut down (ACPI) and waits up to `graceful` for it; a guest still running
  // then is powered off (destroyed), as Nova's power_off with a timeout does. True when the guest
  // shut down by itself.
  virtual bool stop_server(const std::string& uuid, std::chrono::milliseconds graceful) = 0;

  // Events about domains go to `handler` from now on (replacing any earlier one; an empty one
  // stops them). A driver without events ignores this.
  virtual void watch_events(DomainEventHandler handler) { (void)handler; }
};

}  // namespace volgate::controller
