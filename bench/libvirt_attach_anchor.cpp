// The anchor of the attach/detach benchmark (bench/nova_attach_latency.py): libvirt's own cost
// of hot-plugging one NBD disk, with nothing of volgate's around it.
//   build/bench/libvirt_attach_anchor URI DOMAIN DISK_XML_FILE ALIAS CYCLES
// Each cycle times two things, the same way the benchmark times the controller's API:
//   attach: virDomainAttachDeviceFlags(LIVE|CONFIG) of the disk XML, until it returns;
//   detach: virDomainDetachDeviceAlias(LIVE) until libvirt's DEVICE_REMOVED event for the
//           alias, then virDomainDetachDeviceAlias(CONFIG) (the controller does both).
// Prints one line per cycle, "attach_ms detach_ms". The disk must carry <alias name='ALIAS'/>
// (a user alias, "ua-..."), which is how it is found again for the detach.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

namespace {

std::mutex mutex;
std::condition_variable removed_changed;
std::string removed_alias;  // the alias of the last DEVICE_REMOVED seen

[[noreturn]] void die(const std::string& what) {
  const char* message = virGetLastErrorMessage();
  std::fprintf(stderr, "libvirt_attach_anchor: %s: %s\n", what.c_str(), message ? message : "");
  std::exit(1);
}

void on_device_removed(virConnectPtr, virDomainPtr, const char* alias, void*) {
  {
    std::lock_guard lock(mutex);
    removed_alias = alias ? alias : "";
  }
  removed_changed.notify_all();
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: libvirt_attach_anchor URI DOMAIN DISK_XML_FILE ALIAS CYCLES\n");
    return 2;
  }
  const std::string uri = argv[1], domain_name = argv[2], alias = argv[4];
  const int cycles = std::atoi(argv[5]);
  std::ifstream in(argv[3]);
  std::stringstream xml;
  xml << in.rdbuf();
  if (!in || xml.str().empty()) {
    std::fprintf(stderr, "libvirt_attach_anchor: cannot read %s\n", argv[3]);
    return 2;
  }

  // Events need libvirt's event loop running before the connection is opened.
  if (virEventRegisterDefaultImpl() != 0) die("event loop");
  std::thread([] {
    for (;;) virEventRunDefaultImpl();
  }).detach();
  virConnectPtr conn = virConnectOpen(uri.c_str());
  if (!conn) die("connect " + uri);
  virDomainPtr domain = virDomainLookupByName(conn, domain_name.c_str());
  if (!domain) die("domain " + domain_name);
  if (virConnectDomainEventRegisterAny(conn, domain, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                       VIR_DOMAIN_EVENT_CALLBACK(on_device_removed), nullptr, nullptr) < 0)
    die("DEVICE_REMOVED events");

  const unsigned both = VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG;
  for (int i = 0; i < cycles; ++i) {
    {
      std::lock_guard lock(mutex);
      removed_alias.clear();
    }
    auto t0 = std::chrono::steady_clock::now();
    if (virDomainAttachDeviceFlags(domain, xml.str().c_str(), both) != 0) die("attach");
    const double attach_ms = ms_since(t0);

    t0 = std::chrono::steady_clock::now();
    if (virDomainDetachDeviceAlias(domain, alias.c_str(), VIR_DOMAIN_AFFECT_LIVE) != 0) die("detach (live)");
    {
      std::unique_lock lock(mutex);
      if (!removed_changed.wait_for(lock, std::chrono::seconds(10), [&] { return removed_alias == alias; })) {
        std::fprintf(stderr, "libvirt_attach_anchor: no DEVICE_REMOVED for %s within 10 s\n", alias.c_str());
        return 1;
      }
    }
    if (virDomainDetachDeviceAlias(domain, alias.c_str(), VIR_DOMAIN_AFFECT_CONFIG) != 0) die("detach (config)");
    const double detach_ms = ms_since(t0);
    std::printf("%.3f %.3f\n", attach_ms, detach_ms);
    std::fflush(stdout);
  }
  virDomainFree(domain);
  virConnectClose(conn);
  // The event thread never returns: leave without waiting for it.
  std::quick_exit(0);
}
