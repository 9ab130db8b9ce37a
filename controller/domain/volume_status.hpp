#pragma once
// Volume and snapshot states, named and ordered as Cinder's, and the transitions between them.
//
// Every status change goes through allowed() so that a racing request (delete while extending,
// extend while deleting) is refused instead of silently overwriting another flow's state.
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace volgate::controller {

enum class VolumeStatus {
  creating,
  available,
  reserved,
  attaching,
  in_use,
  detaching,
  extending,
  uploading,  // being copied into an image (os-volume_upload_image)
  deleting,
  error,
  error_deleting,
  backing_up,        // "backing-up": an available volume being read by a backup
  restoring_backup,  // "restoring-backup": a volume being written by a restore
};

enum class SnapshotStatus { creating, available, deleting, error, error_deleting };

std::string_view to_string(VolumeStatus status);
std::string_view to_string(SnapshotStatus status);
std::optional<VolumeStatus> parse_volume_status(std::string_view text);
std::optional<SnapshotStatus> parse_snapshot_status(std::string_view text);

bool allowed(VolumeStatus from, VolumeStatus to);
bool allowed(SnapshotStatus from, SnapshotStatus to);

// Thrown for a transition the table refuses; the API answers 409 with its message.
class IllegalTransition : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws IllegalTransition naming `what` (e.g. "volume 1234") and both states.
void require_transition(const std::string& what, VolumeStatus from, VolumeStatus to);
void require_transition(const std::string& what, SnapshotStatus from, SnapshotStatus to);

}  // namespace volgate::controller
