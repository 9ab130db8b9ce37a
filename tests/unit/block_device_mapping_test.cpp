// Device names of block device mappings: what bus a name means, the next free one, its SCSI unit.
#include "controller/domain/block_device_mapping.hpp"

#include <gtest/gtest.h>

namespace volgate::controller {
namespace {

TEST(DeviceNames, BusFollowsThePrefix) {
  EXPECT_EQ(bus_of_device("/dev/sdb"), "scsi");
  EXPECT_EQ(bus_of_device("vdc"), "virtio");
  EXPECT_FALSE(bus_of_device("/dev/hda"));
  EXPECT_FALSE(bus_of_device("/dev/sdaa"));
  EXPECT_FALSE(bus_of_device("/dev/sda"));  // the root disk's
  EXPECT_FALSE(bus_of_device("vda"));
  EXPECT_FALSE(bus_of_device("/dev/sd1"));
  EXPECT_FALSE(bus_of_device(""));
}

TEST(DeviceNames, NextFreeSkipsTheRootAndTakenNames) {
  EXPECT_EQ(next_device_name("scsi", {}), "/dev/sdb");
  EXPECT_EQ(next_device_name("scsi", {"/dev/sdb", "/dev/sdc"}), "/dev/sdd");
  EXPECT_EQ(next_device_name("virtio", {"/dev/sdb"}), "/dev/vdb");
  std::set<std::string> all;
  for (char c = 'b'; c <= 'z'; ++c) all.insert(std::string("/dev/sd") + c);
  EXPECT_FALSE(next_device_name("scsi", all));
}

TEST(DeviceNames, ScsiUnitIsTheLettersIndex) {
  EXPECT_EQ(scsi_unit_of("/dev/sdb"), 1u);
  EXPECT_EQ(scsi_unit_of("sdz"), 25u);
  EXPECT_EQ(target_of("/dev/sdq"), "sdq");
}

TEST(MappingStatus, NamesRoundTrip) {
  for (auto s : {MappingStatus::attaching, MappingStatus::attached, MappingStatus::detaching})
    EXPECT_EQ(parse_mapping_status(to_string(s)), s);
  EXPECT_FALSE(parse_mapping_status("bogus"));
}

}  // namespace
}  // namespace volgate::controller
