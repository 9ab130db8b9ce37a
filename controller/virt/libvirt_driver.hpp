#pragma once
// VirtDriver over libvirt's C API: one connection (with keep-alive), and libvirt's default event
// loop on a thread of the process, whose DEVICE_REMOVED events tell a detach when the guest has
// let a disk go. libvirt 9.0 reports a live detach as done as soon as it has asked the guest, so
// only the event (or the disk gone from the live XML) proves it. The other events the controller
// reconciles (a domain undefined or stopped, a disk removed that no detach waited for, QEMU's I/O
// errors) go to the handler given to watch_events, on the event loop's thread.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "controller/virt/virt_driver.hpp"

struct _virConnect;

namespace volgate::controller {

struct DetachOptions {
  // Nova retries a live detach 8 times; each waits this long for DEVICE_REMOVED.
  unsigned attempts = 8;
  std::chrono::milliseconds wait_per_attempt{std::chrono::seconds(5)};
};

// libvirt 9.2.0 (virConnectGetLibVersion's number) is the first to carry `<reconnect delay='N'/>`
// in an NBD disk's <source> to QEMU's reconnect-delay; 9.0 drops the element without a word.
inline constexpr unsigned long kLibvirtNbdReconnectVersion = 9'002'000;

// The reconnect delay to write into a disk's XML for the libvirt daemon at `lib_version`: none
// where that libvirt would drop it, or when `configured` is zero (turned off).
std::optional<std::chrono::seconds> nbd_reconnect_delay(unsigned long lib_version, std::chrono::seconds configured);

class LibvirtDriver final : public VirtDriver {
 public:
  // Connects to `uri` (e.g. qemu:///system). Throws VirtError naming it when it cannot.
  // `reconnect_delay`: how long QEMU holds a disk's requests while it reconnects to a gateway
  // that went away, written into the disks it attaches when libvirt can carry it (0: never).
  explicit LibvirtDriver(const std::string& uri, DetachOptions detach = {},
                         std::chrono::seconds reconnect_delay = std::chrono::seconds(0));
  ~LibvirtDriver() override;
  LibvirtDriver(const LibvirtDriver&) = delete;
  LibvirtDriver& operator=(const LibvirtDriver&) = delete;

  std::vector<Server> list_servers() override;
  std::optional<Server> find_server(const std::string& uuid_or_name) override;
  std::vector<GuestDisk> disks(const std::string& uuid, bool persistent) override;
  void attach_disk(const std::string& uuid, const DiskRequest& disk) override;
  void detach_disk(const std::string& uuid, const std::string& serial) override;
  void start_server(const std::string& uuid) override;
  bool stop_server(const std::string& uuid, std::chrono::milliseconds graceful) override;
  void watch_events(DomainEventHandler handler) override;

  // The C event callbacks' way in, on the event loop's thread: `relay` is what they were
  // registered with.
  static void deliver_device_removed(void* relay, const std::string& uuid, const std::string& alias);
  static void deliver_event(void* relay, const DomainEvent& event);

 private:
  void on_device_removed(const std::string& uuid, const std::string& alias);
  void on_event(const DomainEvent& event);
  // Before asking for a detach: DEVICE_REMOVED for (uuid, alias) is to be kept for wait_removed.
  void expect_removal(const std::string& uuid, const std::string& alias);
  // Waits until DEVICE_REMOVED for (uuid, alias) came, or `timeout`; true if it came. Either
  // way the expectation is over.
  bool wait_removed(const std::string& uuid, const std::string& alias, std::chrono::milliseconds timeout);

  // What libvirt's event callbacks point at instead of this driver (see the .cpp): libvirt may
  // still be inside one of them when deregistration returns, and frees the relay itself.
  struct EventRelay;
  void register_events();

  const std::string uri_;
  const DetachOptions detach_;
  const std::chrono::seconds nbd_reconnect_delay_;
  unsigned long lib_version_ = 0;  // the libvirt daemon's, read once connected
  _virConnect* conn_ = nullptr;
  EventRelay* relay_ = nullptr;
  int removed_callback_ = -1;
  int lifecycle_callback_ = -1;
  int io_error_callback_ = -1;

  std::mutex mutex_;
  std::condition_variable removed_changed_;
  // (uuid, alias) of the detaches in progress, and those of them whose DEVICE_REMOVED came:
  // both hold only what a running detach_disk waits for.
  std::set<std::pair<std::string, std::string>> waiting_;
  std::set<std::pair<std::string, std::string>> removed_;
  DomainEventHandler handler_;
};

// The <disk> XML for a volume's export: raw, cache none, discard unmap, the volume id as the
// serial, a user alias (ua-SERIAL) to detach it by, an explicit drive address on scsi; with
// `reconnect_delay`, QEMU waits that long for the NBD server to come back before failing requests.
std::string disk_xml(const DiskRequest& disk, std::optional<std::chrono::seconds> reconnect_delay = std::nullopt);
// The disks in a domain XML document, the root one marked. Throws VirtError when it is not one.
std::vector<GuestDisk> disks_in_domain_xml(const std::string& xml);

}  // namespace volgate::controller
