#pragma once
// A block device mapping (Nova's BDM): a volume attached to a server, with the device name it
// has there. The row is made before anything else in an attach, so the name is reserved and
// two attaches to one server never get the same one; it holds the Cinder attachment and the
// connection info the disk was made from, so a detach (or a restarted controller) finds them.
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace volgate::controller {

enum class MappingStatus { attaching, attached, detaching };

std::string_view to_string(MappingStatus status);
std::optional<MappingStatus> parse_mapping_status(std::string_view text);

struct BlockDeviceMapping {
  std::string id;  // a random UUID
  std::string project;
  std::string server_id;  // the libvirt domain's UUID
  std::string volume_id;
  std::string attachment_id;  // the Cinder attachment, empty until made
  std::string device;         // /dev/sdb, /dev/vdc
  std::string bus = "scsi";   // scsi or virtio
  std::string tag;            // the user's, as Nova keeps it
  bool delete_on_termination = false;
  std::string connection_info;  // JSON, once the attachment has it
  MappingStatus status = MappingStatus::attaching;
  std::string created_at;
  std::string updated_at;
};

// The disk bus a device name implies: sdX scsi, vdX virtio; nullopt for anything else.
std::optional<std::string> bus_of_device(std::string_view device);

// The first free name on `bus` ("/dev/sdb" on, after the names in `used`; sda and vda are left
// to the server's own root disk), or nullopt when all 26 are taken.
std::optional<std::string> next_device_name(const std::string& bus, const std::set<std::string>& used);

// The unit on the virtio-scsi controller that /dev/sdX gets: its letter's index (sdb: 1).
unsigned scsi_unit_of(std::string_view device);

// "/dev/sdb" or "sdb" -> "sdb" (libvirt's target dev).
std::string_view target_of(std::string_view device);

}  // namespace volgate::controller
