#include "controller/domain/attachment.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace volgate::controller {
namespace {

constexpr std::array<std::pair<AttachmentStatus, std::string_view>, 4> kNames = {{
    {AttachmentStatus::reserved, "reserved"},
    {AttachmentStatus::attaching, "attaching"},
    {AttachmentStatus::attached, "attached"},
    {AttachmentStatus::detaching, "detaching"},
}};

}  // namespace

std::string_view to_string(AttachmentStatus status) {
  for (const auto& [s, name] : kNames)
    if (s == status) return name;
  return "unknown";
}

std::optional<AttachmentStatus> parse_attachment_status(std::string_view text) {
  for (const auto& [s, name] : kNames)
    if (name == text) return s;
  return std::nullopt;
}

std::string export_name_for(const std::string& volume_id, bool read_only) {
  return "volume-" + volume_id + (read_only ? "-ro" : "");
}

bool holds_export(const Attachment& a) {
  return !a.export_name.empty() && a.status != AttachmentStatus::reserved;
}

VolumeStatus status_for_attachments(const std::vector<Attachment>& attachments) {
  auto any = [&](AttachmentStatus s) {
    return std::any_of(attachments.begin(), attachments.end(), [s](const Attachment& a) { return a.status == s; });
  };
  if (attachments.empty()) return VolumeStatus::available;
  if (any(AttachmentStatus::attached)) return VolumeStatus::in_use;
  if (any(AttachmentStatus::detaching)) return VolumeStatus::detaching;
  if (any(AttachmentStatus::attaching)) return VolumeStatus::attaching;
  return VolumeStatus::reserved;
}

}  // namespace volgate::controller
