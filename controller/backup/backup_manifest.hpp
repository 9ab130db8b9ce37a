#pragma once
// What one backup holds: the volume's size and, for every chunk-sized piece of it that holds
// data, the chunk (by hash) with that data. Pieces it does not list read as zeros (holes and
// zero-filled pieces are not stored). A manifest is whole by itself: an incremental backup lists
// every piece too, most of them chunks its parent already stored, so restoring never walks a
// chain and deleting a parent never damages a child's data (the chunks stay while any manifest
// names them).
#include <cstdint>
#include <string>
#include <vector>

namespace volgate::controller {

struct ManifestChunk {
  uint64_t offset = 0;
  uint32_t length = 0;
  std::string hash;
};

struct BackupManifest {
  std::string backup_id;
  std::string parent_id;     // the backup an incremental was compared with; empty for a full one
  uint64_t volume_bytes = 0;
  uint32_t chunk_bytes = 0;  // the size of every piece but maybe the last
  std::vector<ManifestChunk> chunks;  // by offset

  // JSON text, and back. from_json throws std::runtime_error saying what is wrong (a manifest
  // is read from disk: it may be damaged).
  std::string to_json() const;
  static BackupManifest from_json(const std::string& text);
};

}  // namespace volgate::controller
