#include "controller/virt/libvirt_driver.hpp"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace volgate::controller {
namespace {

[[noreturn]] void fail(const std::string& what) {
  const char* message = virGetLastErrorMessage();
  std::string text = what + ": " + (message ? message : "unknown libvirt error");
  if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) throw DomainNotFound(std::move(text));
  throw VirtError(std::move(text));
}

struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using Domain = std::unique_ptr<virDomain, DomainFree>;

struct CharFree {
  void operator()(char* p) const { std::free(p); }
};

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string uuid_of(virDomainPtr d) {
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  virDomainGetUUIDString(d, uuid);
  return uuid;
}

// The project in the domain's volgate metadata element; empty when it has none. Read from the
// domain's XML rather than with virDomainGetMetadata, which reports a domain without the element
// as an error (that libvirt prints on stderr, once per domain and listing).
std::string owner_of(virDomainPtr d) {
  std::unique_ptr<char, CharFree> xml(virDomainGetXMLDesc(d, 0));
  if (!xml) {
    virResetLastError();  // the domain went away meanwhile: it has no owner to show
    return "";
  }
  try {
    std::istringstream in(xml.get());
    boost::property_tree::ptree tree;
    boost::property_tree::read_xml(in, tree);
    auto metadata = tree.get_child_optional("domain.metadata");
    if (!metadata) return "";
    // Any prefix may name the namespace: the element is the one that declares it.
    for (const auto& [name, element] : *metadata) {
      auto attributes = element.get_child_optional("<xmlattr>");
      if (!attributes) continue;
      for (const auto& [attribute, value] : *attributes)
        if (attribute.starts_with("xmlns") && value.data() == kServerOwnerNamespace)
          return attributes->get<std::string>("project", "");
    }
  } catch (const boost::property_tree::ptree_error& e) {
    spdlog::warn("domain {}: its XML is not readable ({}); no project owns it", uuid_of(d), e.what());
  }
  return "";
}

Server server_of(virDomainPtr d) {
  Server s;
  s.uuid = uuid_of(d);
  const char* name = virDomainGetName(d);
  s.name = name ? name : "";
  int state = VIR_DOMAIN_NOSTATE, reason = 0;
  if (virDomainGetState(d, &state, &reason, 0) == 0) {
    switch (state) {
      case VIR_DOMAIN_RUNNING: s.state = ServerState::running; break;
      case VIR_DOMAIN_PAUSED: s.state = ServerState::paused; break;
      case VIR_DOMAIN_SHUTOFF: s.state = ServerState::shut_off; break;
      default: s.state = ServerState::other;
    }
  }
  s.persistent = virDomainIsPersistent(d) == 1;
  virDomainInfo info{};
  if (virDomainGetInfo(d, &info) == 0) {
    s.vcpus = info.nrVirtCpu;
    s.memory_mib = info.maxMem / 1024;
  }
  s.project = owner_of(d);
  return s;
}

// libvirt's default event loop is process-wide: registered before the first connection that
// wants events, and run by one thread for the life of the process (a second runner would be
// refused, and drivers come and go as connections break).
void start_event_loop_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (virEventRegisterDefaultImpl() != 0) fail("libvirt event loop");
    std::thread([] {
      for (;;) {
        if (virEventRunDefaultImpl() < 0) {
          spdlog::warn("libvirt event loop: {}", virGetLastErrorMessage());
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }).detach();
  });
}

}  // namespace

// libvirt drops its lock while it runs an event callback, so virConnectDomainEventDeregisterAny
// can return while one of ours is still running on the event loop's thread, and a driver freed
// then would be used after its end. The callbacks therefore reach the driver through this relay,
// under its mutex: the destructor detaches the driver under the same mutex, which waits for a
// callback in progress, and no later callback finds it. libvirt calls release() once per
// registration when it has really forgotten it (at once, or after the dispatch in progress),
// the driver once when it is done; the last of these frees the relay.
struct LibvirtDriver::EventRelay {
  std::mutex mutex;
  LibvirtDriver* driver;
  int holders = 1;  // the driver, and each registration libvirt holds

  explicit EventRelay(LibvirtDriver* d) : driver(d) {}

  template <typename F>
  static void deliver(void* opaque, F&& to_driver) {
    auto* relay = static_cast<EventRelay*>(opaque);
    std::lock_guard lock(relay->mutex);
    if (relay->driver) to_driver(*relay->driver);
  }

  // Called by libvirt (a registration's free callback) and by the driver when it is done.
  static void release(void* opaque) {
    auto* relay = static_cast<EventRelay*>(opaque);
    bool last;
    {
      std::lock_guard lock(relay->mutex);
      last = --relay->holders == 0;
    }
    if (last) delete relay;
  }

  // The driver's end: waits for a callback in progress; none reaches the driver afterwards.
  static void detach(EventRelay* relay) {
    {
      std::lock_guard lock(relay->mutex);
      relay->driver = nullptr;
    }
    release(relay);
  }
};

namespace {

void device_removed_callback(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  LibvirtDriver::deliver_device_removed(opaque, uuid_of(dom), alias ? alias : "");
}

void lifecycle_callback(virConnectPtr, virDomainPtr dom, int event, int, void* opaque) {
  // Undefined: a persistent domain is gone. Stopped: a transient one is gone with it (and a
  // persistent one is merely shut off, which the reconcile tells apart).
  if (event != VIR_DOMAIN_EVENT_UNDEFINED && event != VIR_DOMAIN_EVENT_STOPPED) return;
  LibvirtDriver::deliver_event(opaque, {.kind = DomainEvent::Kind::changed, .uuid = uuid_of(dom)});
}

void io_error_callback(virConnectPtr, virDomainPtr dom, const char*, const char* alias, int, const char* reason,
                       void* opaque) {
  LibvirtDriver::deliver_event(opaque, {.kind = DomainEvent::Kind::io_error, .uuid = uuid_of(dom),
                                        .alias = alias ? alias : "", .reason = reason ? reason : ""});
}

// The domain's state, or nullopt when it no longer exists (a transient domain that stopped).
std::optional<int> state_of(virDomainPtr d) {
  int state = VIR_DOMAIN_NOSTATE, reason = 0;
  if (virDomainGetState(d, &state, &reason, 0) != 0) return std::nullopt;
  return state;
}

}  // namespace

std::string_view to_string(ServerState state) {
  switch (state) {
    case ServerState::running: return "running";
    case ServerState::paused: return "paused";
    case ServerState::shut_off: return "shut off";
    case ServerState::other: return "other";
  }
  return "other";
}

std::optional<std::chrono::seconds> nbd_reconnect_delay(unsigned long lib_version, std::chrono::seconds configured) {
  if (configured.count() <= 0 || lib_version < kLibvirtNbdReconnectVersion) return std::nullopt;
  return configured;
}

std::string disk_xml(const DiskRequest& d, std::optional<std::chrono::seconds> reconnect_delay) {
  std::ostringstream x;
  x << "<disk type='network' device='disk'>"
    << "<driver name='qemu' type='raw' cache='none' discard='unmap'/>"
    << "<source protocol='nbd' name='" << xml_escape(d.export_name) << "'>"
    << "<host transport='unix' socket='" << xml_escape(d.socket) << "'/>";
  if (reconnect_delay) x << "<reconnect delay='" << reconnect_delay->count() << "'/>";
  x << "</source>"
    << "<target dev='" << xml_escape(d.target) << "' bus='" << xml_escape(d.bus) << "'/>"
    << "<serial>" << xml_escape(d.serial) << "</serial>"
    << "<alias name='ua-" << xml_escape(d.serial) << "'/>";
  if (d.read_only) x << "<readonly/>";
  if (d.bus == "scsi")
    x << "<address type='drive' controller='0' bus='0' target='0' unit='" << d.scsi_unit << "'/>";
  x << "</disk>";
  return x.str();
}

std::vector<GuestDisk> disks_in_domain_xml(const std::string& xml) {
  namespace pt = boost::property_tree;
  pt::ptree doc;
  try {
    std::istringstream in(xml);
    pt::read_xml(in, doc);
  } catch (const pt::xml_parser_error& e) {
    throw VirtError(std::string("domain XML: ") + e.what());
  }
  std::vector<GuestDisk> out;
  auto devices = doc.get_child_optional("domain.devices");
  if (!devices) return out;
  bool any_boot_order = false;
  std::optional<size_t> first_hard_disk;  // not a cdrom, floppy or lun
  for (const auto& [tag, disk] : *devices) {
    if (tag != "disk") continue;
    GuestDisk g;
    g.serial = disk.get("serial", "");
    g.target = disk.get("target.<xmlattr>.dev", "");
    g.bus = disk.get("target.<xmlattr>.bus", "");
    g.alias = disk.get("alias.<xmlattr>.name", "");
    g.export_name = disk.get("source.<xmlattr>.name", "");
    g.socket = disk.get("source.host.<xmlattr>.socket", "");
    const auto order = disk.get_optional<std::string>("boot.<xmlattr>.order");
    any_boot_order = any_boot_order || order.has_value();
    g.boot = order && *order == "1";
    if (!first_hard_disk && disk.get("<xmlattr>.device", "disk") == "disk") first_hard_disk = out.size();
    out.push_back(std::move(g));
  }
  // Without per-device orders the firmware's list decides, and libvirt's default list is hd:
  // the first hard disk is the root. A direct kernel boot reads no disk at all.
  if (!any_boot_order && first_hard_disk && !doc.get_optional<std::string>("domain.os.kernel")) {
    std::string first_dev = "hd";
    if (auto os = doc.get_child_optional("domain.os")) {
      for (const auto& [tag, boot] : *os)
        if (tag == "boot") {
          first_dev = boot.get("<xmlattr>.dev", "");
          break;
        }
    }
    if (first_dev == "hd") out[*first_hard_disk].boot = true;
  }
  return out;
}

LibvirtDriver::LibvirtDriver(const std::string& uri, DetachOptions detach, std::chrono::seconds reconnect_delay)
    : uri_(uri), detach_(detach), nbd_reconnect_delay_(reconnect_delay) {
  start_event_loop_once();
  conn_ = virConnectOpen(uri_.c_str());
  if (!conn_) fail("libvirt " + uri_);
  // The daemon's version, not this library's: the daemon parses the disk XML. An unknown one
  // (0) gets no reconnect delay, the safe side (an older libvirt drops it anyway).
  if (virConnectGetLibVersion(conn_, &lib_version_) != 0) lib_version_ = 0;
  if (nbd_reconnect_delay_.count() > 0 && !nbd_reconnect_delay(lib_version_, nbd_reconnect_delay_))
    spdlog::info("libvirt {}.{}.{} cannot set QEMU's NBD reconnect delay (9.2.0 can): a gateway crash shows "
                 "attached guests I/O errors until it is back",
                 lib_version_ / 1000000, lib_version_ / 1000 % 1000, lib_version_ % 1000);
  // A libvirtd that goes away is noticed within seconds rather than at the next call.
  virConnectSetKeepAlive(conn_, 5, 3);
  relay_ = new EventRelay(this);
  try {
    register_events();
  } catch (...) {
    EventRelay::detach(relay_);
    virConnectClose(conn_);
    throw;
  }
}

void LibvirtDriver::register_events() {
  struct Wanted {
    int* id;
    int event;
    virConnectDomainEventGenericCallback callback;
  };
  const Wanted wanted[] = {
      {&removed_callback_, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(device_removed_callback)},
      {&lifecycle_callback_, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(lifecycle_callback)},
      {&io_error_callback_, VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, VIR_DOMAIN_EVENT_CALLBACK(io_error_callback)},
  };
  for (const auto& w : wanted) {
    {
      // Counted before: libvirt may run the free callback as soon as the registration exists.
      std::lock_guard lock(relay_->mutex);
      ++relay_->holders;
    }
    *w.id = virConnectDomainEventRegisterAny(conn_, nullptr, w.event, w.callback, relay_, EventRelay::release);
    if (*w.id < 0) {
      const char* message = virGetLastErrorMessage();
      const std::string why = message ? message : "unknown libvirt error";
      {
        std::lock_guard lock(relay_->mutex);
        --relay_->holders;  // a failed registration never calls the free callback
      }
      for (int id : {removed_callback_, lifecycle_callback_})
        if (id >= 0) virConnectDomainEventDeregisterAny(conn_, id);
      throw VirtError("libvirt " + uri_ + ": domain events: " + why);
    }
  }
}

LibvirtDriver::~LibvirtDriver() {
  for (int id : {removed_callback_, lifecycle_callback_, io_error_callback_})
    if (id >= 0) virConnectDomainEventDeregisterAny(conn_, id);
  EventRelay::detach(relay_);
  virConnectClose(conn_);
}

void LibvirtDriver::deliver_device_removed(void* relay, const std::string& uuid, const std::string& alias) {
  EventRelay::deliver(relay, [&](LibvirtDriver& d) { d.on_device_removed(uuid, alias); });
}

void LibvirtDriver::deliver_event(void* relay, const DomainEvent& event) {
  EventRelay::deliver(relay, [&](LibvirtDriver& d) { d.on_event(event); });
}

void LibvirtDriver::watch_events(DomainEventHandler handler) {
  std::lock_guard lock(mutex_);
  handler_ = std::move(handler);
}

void LibvirtDriver::on_event(const DomainEvent& event) {
  DomainEventHandler handler;
  {
    std::lock_guard lock(mutex_);
    handler = handler_;
  }
  if (handler) handler(event);
}

void LibvirtDriver::on_device_removed(const std::string& uuid, const std::string& alias) {
  bool awaited = false;
  {
    std::lock_guard lock(mutex_);
    awaited = waiting_.count({uuid, alias}) != 0;
    if (awaited) removed_.emplace(uuid, alias);
  }
  if (awaited) {
    removed_changed_.notify_all();
    return;
  }
  // A removal no detach of ours waits for was done outside the controller.
  on_event({.kind = DomainEvent::Kind::device_removed, .uuid = uuid, .alias = alias});
}

void LibvirtDriver::expect_removal(const std::string& uuid, const std::string& alias) {
  std::lock_guard lock(mutex_);
  waiting_.emplace(uuid, alias);
  removed_.erase({uuid, alias});
}

bool LibvirtDriver::wait_removed(const std::string& uuid, const std::string& alias, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const bool removed =
      removed_changed_.wait_for(lock, timeout, [&] { return removed_.count({uuid, alias}) != 0; });
  waiting_.erase({uuid, alias});
  removed_.erase({uuid, alias});
  return removed;
}

std::vector<Server> LibvirtDriver::list_servers() {
  virDomainPtr* domains = nullptr;
  int n = virConnectListAllDomains(conn_, &domains, 0);
  if (n < 0) fail("listing the domains");
  std::vector<Server> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(server_of(domains[i]));
    virDomainFree(domains[i]);
  }
  std::free(domains);
  return out;
}

std::optional<Server> LibvirtDriver::find_server(const std::string& uuid_or_name) {
  std::optional<Server> by_name;
  int named = 0;
  for (auto& s : list_servers()) {
    if (s.uuid == uuid_or_name) return s;
    if (s.name == uuid_or_name) {
      by_name = s;
      ++named;
    }
  }
  return named == 1 ? by_name : std::nullopt;
}

std::vector<GuestDisk> LibvirtDriver::disks(const std::string& uuid, bool persistent) {
  Domain d(virDomainLookupByUUIDString(conn_, uuid.c_str()));
  if (!d) fail("domain " + uuid);
  std::unique_ptr<char, CharFree> xml(virDomainGetXMLDesc(d.get(), persistent ? VIR_DOMAIN_XML_INACTIVE : 0));
  if (!xml) fail("domain " + uuid + ": XML");
  return disks_in_domain_xml(xml.get());
}

void LibvirtDriver::attach_disk(const std::string& uuid, const DiskRequest& disk) {
  Domain d(virDomainLookupByUUIDString(conn_, uuid.c_str()));
  if (!d) fail("domain " + uuid);
  unsigned flags = 0;
  if (virDomainIsActive(d.get()) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (virDomainIsPersistent(d.get()) == 1) flags |= VIR_DOMAIN_AFFECT_CONFIG;
  const std::string xml = disk_xml(disk, nbd_reconnect_delay(lib_version_, nbd_reconnect_delay_));
  if (virDomainAttachDeviceFlags(d.get(), xml.c_str(), flags) != 0)
    fail("attaching volume " + disk.serial + " to domain " + uuid);
}

void LibvirtDriver::detach_disk(const std::string& uuid, const std::string& serial) {
  Domain d(virDomainLookupByUUIDString(conn_, uuid.c_str()));
  if (!d) fail("domain " + uuid);
  auto find = [&](bool persistent) -> std::optional<GuestDisk> {
    for (auto& g : disks(uuid, persistent))
      if (g.serial == serial) return g;
    return std::nullopt;
  };
  const bool active = virDomainIsActive(d.get()) == 1;
  if (active) {
    for (unsigned attempt = 1;; ++attempt) {
      auto disk = find(false);
      if (!disk) break;  // gone: done (also when the guest let go between attempts)
      expect_removal(uuid, disk->alias);
      if (virDomainDetachDeviceAlias(d.get(), disk->alias.c_str(), VIR_DOMAIN_AFFECT_LIVE) != 0) {
        const char* message = virGetLastErrorMessage();  // before the next call resets it
        const std::string why = message ? message : "unknown libvirt error";
        // QEMU refuses a second request while the guest has not answered the first (and a
        // paused guest never does): that one is still pending, so wait for it as for a new one.
        if (why.find("already in the process of unplug") == std::string::npos) {
          wait_removed(uuid, disk->alias, std::chrono::milliseconds(0));  // forget the expectation
          if (!find(false)) break;  // removed meanwhile
          throw VirtError("detaching volume " + serial + " from domain " + uuid + ": " + why);
        }
      }
      if (wait_removed(uuid, disk->alias, detach_.wait_per_attempt) || !find(false)) break;
      if (attempt >= detach_.attempts)
        throw VirtError("domain " + uuid + " did not release volume " + serial + " after " +
                        std::to_string(attempt) + " detach requests (the guest keeps the disk)");
      spdlog::warn("domain {}: volume {} still attached after detach request {}; asking again", uuid, serial,
                   attempt);
    }
  }
  if (virDomainIsPersistent(d.get()) == 1) {
    if (auto disk = find(true)) {
      if (disk->alias.empty() ||
          virDomainDetachDeviceAlias(d.get(), disk->alias.c_str(), VIR_DOMAIN_AFFECT_CONFIG) != 0)
        fail("removing volume " + serial + " from the definition of domain " + uuid);
    }
  }
}


void LibvirtDriver::start_server(const std::string& uuid) {
  Domain d(virDomainLookupByUUIDString(conn_, uuid.c_str()));
  if (!d) fail("domain " + uuid);
  if (virDomainCreate(d.get()) != 0) fail("starting domain " + uuid);
}

bool LibvirtDriver::stop_server(const std::string& uuid, std::chrono::milliseconds graceful) {
  Domain d(virDomainLookupByUUIDString(conn_, uuid.c_str()));
  if (!d) fail("domain " + uuid);
  auto stopped = [&] {
    auto state = state_of(d.get());
    return !state || *state == VIR_DOMAIN_SHUTOFF;
  };
  if (stopped()) return true;
  if (virDomainShutdown(d.get()) == 0) {
    const auto deadline = std::chrono::steady_clock::now() + graceful;
    while (std::chrono::steady_clock::now() < deadline) {
      if (stopped()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    spdlog::warn("domain {}: did not shut down within {} ms; powering it off", uuid, graceful.count());
  } else {
    // A guest without ACPI cannot be asked: it can only be powered off.
    spdlog::warn("domain {}: cannot ask the guest to shut down ({}); powering it off", uuid,
                 virGetLastErrorMessage());
  }
  if (virDomainDestroy(d.get()) != 0 && !stopped()) fail("powering off domain " + uuid);
  return false;
}

}  // namespace volgate::controller
