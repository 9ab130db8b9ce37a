#include "controller/doctor/libvirt_checks.hpp"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/run_program.hpp"

namespace volgate::controller::doctor {
namespace {

std::string version_text(unsigned long v) {
  return std::to_string(v / 1000000) + "." + std::to_string(v / 1000 % 1000) + "." + std::to_string(v % 1000);
}

// What one connection to libvirt told, made on a thread of its own so that a libvirtd that
// never answers cannot hold the doctor.
struct LibvirtProbe {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::string error;
  unsigned long library_version = 0;
  unsigned long hypervisor_version = 0;
  std::string capabilities;  // domain capabilities XML
  std::string capabilities_error;
};

// libvirt prints every error on stderr by default; the doctor reports them on its own lines.
void ignore_error(void*, virErrorPtr) {}

void probe(const std::shared_ptr<LibvirtProbe>& p, const std::string& uri) {
  virSetErrorFunc(nullptr, ignore_error);
  std::string error, caps, caps_error;
  unsigned long library = 0, hypervisor = 0;
  virConnectPtr conn = virConnectOpen(uri.c_str());
  if (!conn) {
    const char* m = virGetLastErrorMessage();
    error = m ? m : "unknown libvirt error";
  } else {
    virConnectGetLibVersion(conn, &library);
    virConnectGetVersion(conn, &hypervisor);
    // The default virt type is KVM where /dev/kvm works; volgate's guests may run under TCG, so
    // ask again for plain QEMU when KVM is refused.
    char* xml = virConnectGetDomainCapabilities(conn, nullptr, nullptr, nullptr, nullptr, 0);
    if (!xml) xml = virConnectGetDomainCapabilities(conn, nullptr, nullptr, nullptr, "qemu", 0);
    if (xml) {
      caps = xml;
      std::free(xml);
    } else {
      const char* m = virGetLastErrorMessage();
      caps_error = m ? m : "unknown libvirt error";
    }
    virConnectClose(conn);
  }
  std::lock_guard lock(p->mutex);
  p->error = error;
  p->library_version = library;
  p->hypervisor_version = hypervisor;
  p->capabilities = caps;
  p->capabilities_error = caps_error;
  p->done = true;
  p->done_cv.notify_all();
}

}  // namespace

DomainCapabilities parse_domain_capabilities(const std::string& xml) {
  DomainCapabilities caps;
  boost::property_tree::ptree tree;
  std::istringstream in(xml);
  boost::property_tree::read_xml(in, tree);
  const auto& root = tree.get_child("domainCapabilities");
  caps.emulator = root.get<std::string>("path", "");
  if (auto disk = root.get_child_optional("devices.disk")) {
    if (disk->get<std::string>("<xmlattr>.supported", "no") != "yes") return caps;
    for (const auto& [name, e] : *disk) {
      if (name != "enum" || e.get<std::string>("<xmlattr>.name", "") != "bus") continue;
      for (const auto& [vname, value] : e)
        if (vname == "value") caps.disk_buses.insert(value.get_value<std::string>());
    }
  }
  return caps;
}

std::vector<std::string> missing_qemu_features(const std::string& device_help, const std::string& format_help) {
  std::vector<std::string> missing;
  for (const char* device : {"virtio-scsi-pci", "scsi-hd", "virtio-blk-pci"})
    if (device_help.find(std::string("name \"") + device + "\"") == std::string::npos)
      missing.push_back(std::string("device ") + device);
  // "Supported formats: ... nbd ..." (the block drivers, protocols included).
  const size_t line = format_help.find("Supported formats:");
  const std::string formats =
      line == std::string::npos ? "" : format_help.substr(line, format_help.find('\n', line) - line) + " ";
  if (formats.find(" nbd ") == std::string::npos) missing.push_back("block driver nbd");
  return missing;
}

std::vector<Finding> check_libvirt(const std::string& uri, std::chrono::milliseconds timeout) {
  std::vector<Finding> findings;
  Finding lv{.check = "libvirt"};
  Finding qemu{.check = "QEMU"};
  if (uri.empty()) {
    lv.severity = qemu.severity = Severity::skipped;
    lv.what = "libvirt_uri is none: the controller offers no servers API";
    qemu.what = "no hypervisor configured";
    return {lv, qemu};
  }
  auto p = std::make_shared<LibvirtProbe>();
  std::thread([p, uri] { probe(p, uri); }).detach();  // left behind if it hangs; the process ends soon
  std::unique_lock lock(p->mutex);
  if (!p->done_cv.wait_for(lock, timeout, [&] { return p->done; })) {
    lv.severity = Severity::failure;
    lv.what = uri + " did not answer within " + std::to_string(timeout.count() / 1000) + " s";
    lv.fix = "libvirtd accepts connections but does not answer: look at its log, restart it";
    qemu.severity = Severity::skipped;
    qemu.what = "not checked: libvirt does not answer";
    return {lv, qemu};
  }
  if (!p->error.empty()) {
    lv.severity = Severity::failure;
    lv.what = "cannot connect to " + uri + ": " + p->error;
    lv.fix = "start libvirtd (and virtlogd), e.g. `virtlogd -d; libvirtd -d` or `systemctl start libvirtd`; or set "
             "libvirt_uri in the controller's config to the hypervisor's URI (\"none\" for no servers API)";
    qemu.severity = Severity::skipped;
    qemu.what = "not checked: libvirt is not reachable";
    return {lv, qemu};
  }
  lv.what = uri + " answers (libvirt " + version_text(p->library_version) + ", QEMU " +
            version_text(p->hypervisor_version) + ")";
  findings.push_back(lv);

  if (p->capabilities.empty()) {
    qemu.severity = Severity::failure;
    qemu.what = "libvirt gives no domain capabilities: " + p->capabilities_error;
    qemu.fix = "install qemu-system-x86 (and check that libvirtd can run it)";
    findings.push_back(qemu);
    return findings;
  }
  DomainCapabilities caps;
  try {
    caps = parse_domain_capabilities(p->capabilities);
  } catch (const std::exception& e) {
    qemu.severity = Severity::failure;
    qemu.what = std::string("libvirt's domain capabilities are not readable XML: ") + e.what();
    findings.push_back(qemu);
    return findings;
  }
  std::vector<std::string> missing;
  for (const char* bus : {"scsi", "virtio"})
    if (!caps.disk_buses.count(bus)) missing.push_back(std::string("disk bus ") + bus);
  if (!caps.emulator.empty()) {
    const std::vector<std::string> base = {caps.emulator, "-machine", "none", "-nodefaults", "-display", "none"};
    auto with = [&](std::initializer_list<const char*> more) {
      auto argv = base;
      argv.insert(argv.end(), more.begin(), more.end());
      return argv;
    };
    try {
      auto devices = run_program(with({"-device", "help"}), timeout);
      auto formats = run_program(with({"-drive", "format=help"}), timeout);
      if (devices.timed_out || formats.timed_out) {
        qemu.severity = Severity::failure;
        qemu.what = caps.emulator + " did not answer within " + std::to_string(timeout.count() / 1000) + " s";
        findings.push_back(qemu);
        return findings;
      }
      auto more = missing_qemu_features(devices.output, formats.output);
      missing.insert(missing.end(), more.begin(), more.end());
    } catch (const std::exception& e) {
      qemu.severity = Severity::failure;
      qemu.what = "cannot run " + caps.emulator + ": " + e.what();
      qemu.fix = "install qemu-system-x86";
      findings.push_back(qemu);
      return findings;
    }
  }
  qemu.what = (caps.emulator.empty() ? std::string("libvirt's QEMU") : caps.emulator);
  if (missing.empty()) {
    qemu.what += " takes NBD disks on virtio-scsi and virtio-blk";
  } else {
    qemu.severity = Severity::failure;
    qemu.what += " lacks what attaching a volume needs:";
    for (const auto& m : missing) qemu.what += " " + m + ",";
    qemu.what.pop_back();
    qemu.fix = "install Debian's qemu-system-x86 (its emulator has them all)";
  }
  findings.push_back(qemu);
  return findings;
}

}  // namespace volgate::controller::doctor
