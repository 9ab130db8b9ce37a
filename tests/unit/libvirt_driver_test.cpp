// The XML the libvirt driver writes and reads: a disk for a volume's export, and the disks of
// a domain as libvirt 9.0 describes them (live and persistent); and the driver's end while
// libvirt runs one of its event callbacks, on libvirt's in-process test driver. The calls to
// libvirt itself are exercised against a real libvirtd in the integration suite.
#include "controller/virt/libvirt_driver.hpp"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

namespace volgate::controller {
namespace {

TEST(DiskXml, NamesTheExportSocketSerialAliasAndAddress) {
  DiskRequest d{.socket = "/srv/state/run/nbd.sock", .export_name = "volume-1234", .serial = "1234",
                .target = "sdb", .bus = "scsi", .scsi_unit = 3};
  const std::string xml = disk_xml(d);
  EXPECT_NE(xml.find("<source protocol='nbd' name='volume-1234'>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<host transport='unix' socket='/srv/state/run/nbd.sock'/>"), std::string::npos);
  EXPECT_NE(xml.find("<driver name='qemu' type='raw' cache='none' discard='unmap'/>"), std::string::npos);
  EXPECT_NE(xml.find("<serial>1234</serial>"), std::string::npos);
  EXPECT_NE(xml.find("<alias name='ua-1234'/>"), std::string::npos);
  EXPECT_NE(xml.find("<address type='drive' controller='0' bus='0' target='0' unit='3'/>"), std::string::npos);
  EXPECT_EQ(xml.find("<readonly/>"), std::string::npos);
  // It reads back as the same disk.
  auto disks = disks_in_domain_xml("<domain><devices>" + xml + "</devices></domain>");
  ASSERT_EQ(disks.size(), 1u);
  EXPECT_EQ(disks[0].serial, "1234");
  EXPECT_EQ(disks[0].target, "sdb");
  EXPECT_EQ(disks[0].bus, "scsi");
  EXPECT_EQ(disks[0].alias, "ua-1234");
  EXPECT_EQ(disks[0].export_name, "volume-1234");
  EXPECT_EQ(disks[0].socket, "/srv/state/run/nbd.sock");
}

TEST(DiskXml, VirtioHasNoDriveAddressAndReadOnlyIsMarked) {
  DiskRequest d{.socket = "/s", .export_name = "e", .serial = "v", .target = "vdb", .bus = "virtio", .read_only = true};
  const std::string xml = disk_xml(d);
  EXPECT_EQ(xml.find("<address"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<readonly/>"), std::string::npos);
}

TEST(DiskXml, CarriesTheReconnectDelayInsideTheSourceWhenGiven) {
  DiskRequest d{.socket = "/s", .export_name = "e", .serial = "v", .target = "sdb"};
  const std::string with = disk_xml(d, std::chrono::seconds(10));
  EXPECT_NE(with.find("<host transport='unix' socket='/s'/><reconnect delay='10'/></source>"), std::string::npos)
      << with;
  EXPECT_EQ(disk_xml(d).find("reconnect"), std::string::npos);
  // libvirt reads the disk back the same with it.
  auto disks = disks_in_domain_xml("<domain><devices>" + with + "</devices></domain>");
  ASSERT_EQ(disks.size(), 1u);
  EXPECT_EQ(disks[0].socket, "/s");
  EXPECT_EQ(disks[0].export_name, "e");
}

TEST(DiskXml, TheReconnectDelayGoesOnlyToLibvirtThatCarriesIt) {
  using std::chrono::seconds;
  // Debian 12's libvirt 9.0.0 drops the element: none.
  EXPECT_EQ(nbd_reconnect_delay(9'000'000, seconds(10)), std::nullopt);
  EXPECT_EQ(nbd_reconnect_delay(9'001'000, seconds(10)), std::nullopt);
  EXPECT_EQ(nbd_reconnect_delay(9'002'000, seconds(10)), seconds(10));
  EXPECT_EQ(nbd_reconnect_delay(11'003'000, seconds(7)), seconds(7));
  EXPECT_EQ(nbd_reconnect_delay(11'003'000, seconds(0)), std::nullopt);  // turned off
  EXPECT_EQ(nbd_reconnect_delay(0, seconds(10)), std::nullopt);          // version unknown
  // The XML each version gets.
  DiskRequest d{.socket = "/s", .export_name = "e", .serial = "v", .target = "sdb"};
  EXPECT_EQ(disk_xml(d, nbd_reconnect_delay(9'000'000, seconds(10))).find("<reconnect"), std::string::npos);
  EXPECT_NE(disk_xml(d, nbd_reconnect_delay(9'002'000, seconds(10))).find("<reconnect delay='10'/>"),
            std::string::npos);
}

TEST(DiskXml, EscapesWhatItQuotes) {
  DiskRequest d{.socket = "/a'b&c", .export_name = "x<y", .serial = "s\"", .target = "sdb"};
  const std::string xml = disk_xml(d);
  EXPECT_NE(xml.find("socket='/a&apos;b&amp;c'"), std::string::npos) << xml;
  auto disks = disks_in_domain_xml("<domain><devices>" + xml + "</devices></domain>");
  ASSERT_EQ(disks.size(), 1u);
  EXPECT_EQ(disks[0].socket, "/a'b&c");
  EXPECT_EQ(disks[0].export_name, "x<y");
  EXPECT_EQ(disks[0].serial, "s\"");
}

TEST(DomainXml, ReadsEveryDiskOfALiveDefinition) {
  const char* xml = R"(<domain type='qemu' id='3'>
  <name>guest</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/root.img'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='volume-9'>
        <host transport='unix' socket='/run/nbd.sock'/>
      </source>
      <target dev='sdc' bus='scsi'/>
      <serial>9</serial>
      <alias name='ua-9'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
  </devices>
</domain>)";
  auto disks = disks_in_domain_xml(xml);
  ASSERT_EQ(disks.size(), 2u);
  EXPECT_EQ(disks[0].target, "vda");
  EXPECT_EQ(disks[0].serial, "");
  EXPECT_EQ(disks[1].serial, "9");
  EXPECT_EQ(disks[1].alias, "ua-9");
  EXPECT_EQ(disks[1].socket, "/run/nbd.sock");
}

// The root disk: what the guest boots from. Nova refuses to detach it.
TEST(DomainXml, TheDiskWithBootOrderOneIsTheRoot) {
  auto disks = disks_in_domain_xml(R"(<domain><os><type>hvm</type></os><devices>
    <disk type='file' device='disk'><target dev='sda' bus='scsi'/><serial>a</serial><boot order='2'/></disk>
    <disk type='network' device='disk'><target dev='sdb' bus='scsi'/><serial>b</serial><boot order='1'/></disk>
  </devices></domain>)");
  ASSERT_EQ(disks.size(), 2u);
  EXPECT_FALSE(disks[0].boot);
  EXPECT_TRUE(disks[1].boot);
}

TEST(DomainXml, WithoutPerDeviceOrderTheFirstHardDiskOfAnHdBootIsTheRoot) {
  const char* hd = R"(<domain><os><type>hvm</type><boot dev='hd'/></os><devices>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
    <disk type='network' device='disk'><target dev='sda' bus='scsi'/><serial>root</serial></disk>
    <disk type='network' device='disk'><target dev='sdb' bus='scsi'/><serial>data</serial></disk>
  </devices></domain>)";
  auto disks = disks_in_domain_xml(hd);
  ASSERT_EQ(disks.size(), 3u);
  EXPECT_FALSE(disks[0].boot);
  EXPECT_TRUE(disks[1].boot);
  EXPECT_FALSE(disks[2].boot);
  // No <boot> at all is libvirt's default, hd.
  EXPECT_TRUE(disks_in_domain_xml(R"(<domain><os><type>hvm</type></os><devices>
    <disk type='network' device='disk'><target dev='sda' bus='scsi'/></disk></devices></domain>)")[0].boot);
}

TEST(DomainXml, ANetworkOrKernelBootHasNoRootDisk) {
  auto network = disks_in_domain_xml(R"(<domain><os><type>hvm</type><boot dev='network'/><boot dev='hd'/></os>
    <devices><disk type='network' device='disk'><target dev='sda' bus='scsi'/></disk></devices></domain>)");
  EXPECT_FALSE(network[0].boot);
  auto kernel = disks_in_domain_xml(R"(<domain><os><type>hvm</type><kernel>/boot/vmlinuz</kernel><boot dev='hd'/></os>
    <devices><disk type='network' device='disk'><target dev='sdb' bus='scsi'/></disk></devices></domain>)");
  EXPECT_FALSE(kernel[0].boot);
}

TEST(DomainXml, GarbageIsAVirtError) {
  EXPECT_THROW(disks_in_domain_xml("<domain><devices>"), VirtError);
  EXPECT_TRUE(disks_in_domain_xml("<domain/>").empty());
}

// libvirt runs event callbacks with its own lock dropped, so deregistering returns even while
// one runs: the driver must not be freed under it (it was, before the callbacks went through a
// relay). The handler holds the callback open while the driver is destroyed on another thread.
TEST(LibvirtDriverEvents, DestructionWaitsForTheCallbackInProgress) {
  // test:///default is libvirt's in-process driver: one shared host with a running domain
  // "test", whose events go through the same event loop as a real libvirtd's.
  auto driver = std::make_unique<LibvirtDriver>("test:///default");
  std::promise<void> entered, release;
  std::atomic<bool> first{true};
  auto released = release.get_future().share();
  driver->watch_events([&](const DomainEvent& e) {
    if (e.kind != DomainEvent::Kind::changed || !first.exchange(false)) return;
    entered.set_value();
    released.wait();
  });

  virConnectPtr other = virConnectOpen("test:///default");
  ASSERT_NE(other, nullptr);
  virDomainPtr dom = virDomainLookupByName(other, "test");
  ASSERT_NE(dom, nullptr);
  ASSERT_EQ(virDomainDestroy(dom), 0);  // a STOPPED lifecycle event
  virDomainFree(dom);
  ASSERT_EQ(entered.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << "the lifecycle event never reached the handler";

  std::atomic<bool> destroyed{false};
  std::thread ender([&] {
    driver.reset();
    destroyed = true;
  });
  // A destructor that does not wait returns at once; give it ample time to show that.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(destroyed) << "the driver was freed while libvirt was running its callback";
  release.set_value();
  ender.join();
  EXPECT_TRUE(destroyed);
  virConnectClose(other);
}

}  // namespace
}  // namespace volgate::controller
