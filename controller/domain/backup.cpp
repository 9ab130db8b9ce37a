#include "controller/domain/backup.hpp"

#include <array>
#include <utility>

namespace volgate::controller {
namespace {

constexpr std::array<std::pair<BackupStatus, std::string_view>, 5> kNames{{
    {BackupStatus::creating, "creating"},
    {BackupStatus::available, "available"},
    {BackupStatus::restoring, "restoring"},
    {BackupStatus::deleting, "deleting"},
    {BackupStatus::error, "error"},
}};

}  // namespace

std::string_view to_string(BackupStatus status) {
  for (const auto& [s, name] : kNames)
    if (s == status) return name;
  return "unknown";
}

std::optional<BackupStatus> parse_backup_status(std::string_view text) {
  for (const auto& [s, name] : kNames)
    if (name == text) return s;
  return std::nullopt;
}

}  // namespace volgate::controller
