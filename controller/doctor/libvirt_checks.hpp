#pragma once
// What `volgate doctor` checks of the hypervisor: libvirt answering at the URI the controller
// uses, and its QEMU able to take what an attach gives it (an NBD network disk on a virtio-scsi
// controller, or virtio-blk).
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "controller/doctor/finding.hpp"

namespace volgate::controller::doctor {

// From libvirt's domain capabilities XML: the emulator and the disk buses it offers.
struct DomainCapabilities {
  std::string emulator;
  std::set<std::string> disk_buses;
};
DomainCapabilities parse_domain_capabilities(const std::string& xml);

// What an attach needs of QEMU, from `EMULATOR -device help` and `EMULATOR -drive format=help`:
// the names missing (empty: nothing).
std::vector<std::string> missing_qemu_features(const std::string& device_help, const std::string& format_help);

// libvirt at `uri` ("" is the controller's "none": skipped), then its QEMU. Each step is bounded
// by `timeout` (a libvirtd that accepts and never answers is a failure, not a hang).
std::vector<Finding> check_libvirt(const std::string& uri, std::chrono::milliseconds timeout);

}  // namespace volgate::controller::doctor
