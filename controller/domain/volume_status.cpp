#include "controller/domain/volume_status.hpp"

#include <array>
#include <initializer_list>
#include <stdexcept>
#include <utility>

namespace volgate::controller {
namespace {

constexpr std::array<std::pair<VolumeStatus, std::string_view>, 13> kVolumeNames{{
    {VolumeStatus::creating, "creating"},
    {VolumeStatus::available, "available"},
    {VolumeStatus::reserved, "reserved"},
    {VolumeStatus::attaching, "attaching"},
    {VolumeStatus::in_use, "in-use"},
    {VolumeStatus::detaching, "detaching"},
    {VolumeStatus::extending, "extending"},
    {VolumeStatus::uploading, "uploading"},
    {VolumeStatus::deleting, "deleting"},
    {VolumeStatus::error, "error"},
    {VolumeStatus::error_deleting, "error_deleting"},
    {VolumeStatus::backing_up, "backing-up"},
    {VolumeStatus::restoring_backup, "restoring-backup"},
}};

constexpr std::array<std::pair<SnapshotStatus, std::string_view>, 5> kSnapshotNames{{
    {SnapshotStatus::creating, "creating"},
    {SnapshotStatus::available, "available"},
    {SnapshotStatus::deleting, "deleting"},
    {SnapshotStatus::error, "error"},
    {SnapshotStatus::error_deleting, "error_deleting"},
}};

struct VolumeEdge {
  VolumeStatus from;
  std::initializer_list<VolumeStatus> to;
};

using enum VolumeStatus;

// The life of a volume. A flow that fails part-way lands in `error` (create) or goes back to
// where it started (extend: available; detach: in-use); a failed delete lands in
// `error_deleting`, from which a delete may be retried. An upload to an image goes back to where
// it started, failed or not: the volume's data was only read. A backup reads an available volume
// (backing-up, then back); a restore writes an available one, or one it created (restoring-backup,
// then available, or error when the restore failed).
const VolumeEdge kVolumeEdges[] = {
    {creating, {available, error}},
    {available, {reserved, attaching, extending, uploading, deleting, error, backing_up, restoring_backup}},
    {reserved, {attaching, available, error}},
    {attaching, {in_use, available, error}},
    {in_use, {detaching, extending, uploading, error}},
    {detaching, {available, in_use, error}},
    {extending, {available, in_use, error}},
    {uploading, {available, in_use}},
    {deleting, {error_deleting}},
    {error, {deleting, available}},
    {error_deleting, {deleting}},
    {backing_up, {available, error}},
    {restoring_backup, {available, error}},
};

}  // namespace

std::string_view to_string(VolumeStatus status) {
  for (const auto& [s, name] : kVolumeNames)
    if (s == status) return name;
  return "unknown";
}

std::string_view to_string(SnapshotStatus status) {
  for (const auto& [s, name] : kSnapshotNames)
    if (s == status) return name;
  return "unknown";
}

std::optional<VolumeStatus> parse_volume_status(std::string_view text) {
  for (const auto& [s, name] : kVolumeNames)
    if (name == text) return s;
  return std::nullopt;
}

std::optional<SnapshotStatus> parse_snapshot_status(std::string_view text) {
  for (const auto& [s, name] : kSnapshotNames)
    if (name == text) return s;
  return std::nullopt;
}

bool allowed(VolumeStatus from, VolumeStatus to) {
  for (const auto& edge : kVolumeEdges)
    if (edge.from == from)
      for (VolumeStatus next : edge.to)
        if (next == to) return true;
  return false;
}

bool allowed(SnapshotStatus from, SnapshotStatus to) {
  switch (from) {
    case SnapshotStatus::creating:
      return to == SnapshotStatus::available || to == SnapshotStatus::error;
    case SnapshotStatus::available:
      return to == SnapshotStatus::deleting || to == SnapshotStatus::error;
    case SnapshotStatus::deleting:
      return to == SnapshotStatus::error_deleting;
    case SnapshotStatus::error:
    case SnapshotStatus::error_deleting:
      return to == SnapshotStatus::deleting;
  }
  return false;
}

void require_transition(const std::string& what, VolumeStatus from, VolumeStatus to) {
  if (!allowed(from, to))
    throw IllegalTransition(what + " is " + std::string(to_string(from)) + "; it cannot become " +
                            std::string(to_string(to)));
}

void require_transition(const std::string& what, SnapshotStatus from, SnapshotStatus to) {
  if (!allowed(from, to))
    throw IllegalTransition(what + " is " + std::string(to_string(from)) + "; it cannot become " +
                            std::string(to_string(to)));
}

}  // namespace volgate::controller
