#pragma once
// Moving a volume's bytes into the repository and back.
//
// A backup reads the volume in chunk-sized pieces at fixed offsets, so that the same data at
// the same place gets the same chunk in every backup of the volume: an incremental compares by
// hash with everything stored (its parent's chunks included) and stores only new chunks. Pieces
// the pool reports as holes are not read, and pieces that read as zeros are not stored: both
// are left out of the manifest and restore as zeros. When the pool can say what changed since
// the parent backup's snapshot (RBD), an incremental does not even read the unchanged pieces.
//
// A restore checks each chunk (its checksum, then that its data hashes to its name) before it
// writes it; the first bad chunk stops the restore with the chunk's name and offset.
#include <cstdint>

#include "controller/backup/backup_repository.hpp"
#include "controller/pools/pool.hpp"
#include "controller/pools/volume_io.hpp"

namespace volgate::controller {

struct BackupTally {
  uint64_t read_bytes = 0;     // data read from the volume (holes are not read)
  uint64_t stored_bytes = 0;   // written to the repository (new chunks, compressed)
  uint64_t chunks = 0;         // pieces with data, in the manifest
  uint64_t reused_chunks = 0;  // of those, taken from the parent's manifest unread (unchanged)
};

// Reads `volume` into `writer` (not committed). `progress` as for copies: it may throw to
// cancel. `bps_limit` (0: none) caps the bytes read per second, as the pool's copy_bps_limit
// does for its copies, so a backup does not starve the volumes in use on the same storage.
// `parent`: the manifest of the backup whose snapshot the reader compares with (when it
// changes_known()): every piece unchanged since is named as the parent named it, unread; a
// piece whose chunk the store lost since is read after all. Throws std::system_error for a
// read that fails.
BackupTally back_up_volume(VolumeReader& volume, BackupRepository::Writer& writer, const CopyProgress& progress,
                           uint64_t bps_limit = 0, const BackupManifest* parent = nullptr);

// Writes the backup `manifest` to `target` (at least as large) and finishes it; `bps_limit`
// caps the bytes written per second. Throws std::runtime_error naming the chunk and its offset
// when one is corrupt.
void restore_volume(BackupRepository& repository, const BackupManifest& manifest, VolumeWriter& target,
                    const CopyProgress& progress, uint64_t bps_limit = 0);

}  // namespace volgate::controller
