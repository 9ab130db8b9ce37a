// volgate doctor's hypervisor checks on given answers: libvirt's domain capabilities and QEMU's
// device and format lists; and libvirt at a URI that cannot answer.
#include "controller/doctor/libvirt_checks.hpp"

#include <gtest/gtest.h>

namespace volgate::controller::doctor {
namespace {

const char* kCapabilities = R"(<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <devices>
    <disk supported='yes'>
      <enum name='diskDevice'><value>disk</value><value>cdrom</value></enum>
      <enum name='bus'><value>ide</value><value>scsi</value><value>virtio</value><value>usb</value></enum>
    </disk>
  </devices>
</domainCapabilities>)";

TEST(LibvirtChecksTest, DomainCapabilities) {
  auto caps = parse_domain_capabilities(kCapabilities);
  EXPECT_EQ(caps.emulator, "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(caps.disk_buses, (std::set<std::string>{"ide", "scsi", "virtio", "usb"}));
  auto unsupported = parse_domain_capabilities(
      "<domainCapabilities><path>/q</path><devices><disk supported='no'><enum name='bus'><value>scsi</value></enum>"
      "</disk></devices></domainCapabilities>");
  EXPECT_TRUE(unsupported.disk_buses.empty());
  EXPECT_ANY_THROW(parse_domain_capabilities("<other/>"));
}

TEST(LibvirtChecksTest, WhatQemuLacks) {
  const std::string devices =
      "name \"scsi-hd\", bus SCSI, desc \"virtual SCSI disk\"\n"
      "name \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\"\n"
      "name \"virtio-scsi-pci\", bus PCI, alias \"virtio-scsi\"\n";
  const std::string formats = "Supported formats: file luks nbd qcow2 raw\nSupported formats (read-only): vmdk\n";
  EXPECT_TRUE(missing_qemu_features(devices, formats).empty());
  EXPECT_EQ(missing_qemu_features("name \"virtio-scsi-pci-non-transitional\", bus PCI\n", "Supported formats: raw\n"),
            (std::vector<std::string>{"device virtio-scsi-pci", "device scsi-hd", "device virtio-blk-pci",
                                      "block driver nbd"}));
  // nbd only on the read-only line is not enough; "nbdx" is not nbd.
  EXPECT_EQ(missing_qemu_features(devices, "Supported formats: nbdx raw\nSupported formats (read-only): nbd\n"),
            std::vector<std::string>{"block driver nbd"});
  EXPECT_TRUE(missing_qemu_features(devices, "Supported formats: nbd\n").empty());
}

TEST(LibvirtChecksTest, Unreachable) {
  auto findings = check_libvirt("qemu+unix:///system?socket=/nonexistent/libvirt-sock", std::chrono::seconds(5));
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].severity, Severity::failure);
  EXPECT_NE(findings[0].what.find("cannot connect to qemu+unix:///system?socket=/nonexistent/libvirt-sock"),
            std::string::npos)
      << findings[0].what;
  EXPECT_EQ(findings[1].severity, Severity::skipped);
  findings = check_libvirt("", std::chrono::seconds(5));
  EXPECT_EQ(findings[0].severity, Severity::skipped);
  // libvirt's test driver answers without a daemon (its QEMU part then has no emulator path).
  findings = check_libvirt("test:///default", std::chrono::seconds(5));
  EXPECT_EQ(findings[0].severity, Severity::ok) << findings[0].what;
  EXPECT_NE(findings[0].what.find("test:///default answers (libvirt "), std::string::npos) << findings[0].what;
}

}  // namespace
}  // namespace volgate::controller::doctor
