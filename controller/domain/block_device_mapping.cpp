#include "controller/domain/block_device_mapping.hpp"

#include <array>
#include <utility>

namespace volgate::controller {
namespace {

constexpr std::array<std::pair<MappingStatus, std::string_view>, 3> kNames = {{
    {MappingStatus::attaching, "attaching"},
    {MappingStatus::attached, "attached"},
    {MappingStatus::detaching, "detaching"},
}};

}  // namespace

std::string_view to_string(MappingStatus status) {
  for (const auto& [s, name] : kNames)
    if (s == status) return name;
  return "unknown";
}

std::optional<MappingStatus> parse_mapping_status(std::string_view text) {
  for (const auto& [s, name] : kNames)
    if (name == text) return s;
  return std::nullopt;
}

std::string_view target_of(std::string_view device) {
  if (device.starts_with("/dev/")) device.remove_prefix(5);
  return device;
}

std::optional<std::string> bus_of_device(std::string_view device) {
  const std::string_view target = target_of(device);
  // One letter after the prefix: sdb..sdz, vdb..vdz (what next_device_name hands out); sda and
  // vda are the server's own root disk's.
  if (target.size() != 3 || target[2] < 'b' || target[2] > 'z') return std::nullopt;
  if (target.starts_with("sd")) return "scsi";
  if (target.starts_with("vd")) return "virtio";
  return std::nullopt;
}

std::optional<std::string> next_device_name(const std::string& bus, const std::set<std::string>& used) {
  const std::string prefix = bus == "virtio" ? "/dev/vd" : "/dev/sd";
  for (char letter = 'b'; letter <= 'z'; ++letter) {
    std::string name = prefix + letter;
    if (!used.count(name)) return name;
  }
  return std::nullopt;
}

unsigned scsi_unit_of(std::string_view device) {
  const std::string_view target = target_of(device);
  return target.size() == 3 ? static_cast<unsigned>(target[2] - 'a') : 0;
}

}  // namespace volgate::controller
