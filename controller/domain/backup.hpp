#pragma once
// A backup of a volume, kept in the backup repository (controller/backup/): it outlives the
// volume and its pool, unlike a snapshot.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace volgate::controller {

// Cinder's backup states. A failed create ends in `error` (its data removed); a failed restore
// leaves the backup `available` (the target volume shows the failure); a failed delete ends in
// `error`, from which a delete may be retried.
enum class BackupStatus { creating, available, restoring, deleting, error };

std::string_view to_string(BackupStatus status);
std::optional<BackupStatus> parse_backup_status(std::string_view text);

struct Backup {
  std::string id;
  std::string project;
  std::string volume_id;
  std::string name;
  std::string description;
  uint64_t size_gb = 0;  // the volume's size when it was backed up
  BackupStatus status = BackupStatus::creating;
  std::string parent_id;  // the backup an incremental was made against; empty for a full one
  std::string availability_zone;
  std::string volume_type;  // what a restore to a new volume gives it
  // The volume's LUKS passphrase, for an encrypted volume (backed up as ciphertext), wrapped by
  // the master key for this backup's id: a restore to a new volume rewraps it for that volume.
  bool encrypted = false;
  std::vector<uint8_t> wrapped_key;
  uint64_t object_count = 0;  // chunks with data in its manifest
  uint64_t stored_bytes = 0;  // what it added to the repository (new chunks, compressed)
  std::string data_timestamp;  // when the data was read (ISO 8601)
  std::string restore_volume_id;  // while restoring: the volume it is written to
  std::string error_message;
  std::string created_at;
  std::string updated_at;
};

}  // namespace volgate::controller
