#pragma once
// Content-addressed chunks: each distinct piece of volume data is stored once, in an object of
// the repository's storage (backup_storage.hpp: a file, a RADOS object) named by the SHA-256 of
// the data, compressed with zstd, so a repository shared by many backups (and by the
// incrementals of one volume) holds every distinct chunk once.
//
// A chunk object is: magic "VGCHUNK1" | encoding (0 raw, 1 zstd) | 3 bytes zero | raw length (u32
// LE) | stored length (u64 LE) | SHA-256 of the stored bytes | stored bytes. The header's digest
// is the per-chunk checksum of what is on disk; the name is the digest of the data once
// decompressed. get() checks both, so a flipped byte, a truncated file, a file under another
// chunk's name or a zstd frame that decompresses to something else are all refused, by name.
//
// Writes are atomic (the storage's put); sync_folders_of() makes chunks durable before anything
// names them (a backup's manifest). A chunk under its name is therefore always whole.
//
// Thread-safe: concurrent put() of the same data race only on the storage's replace, where
// either object wins with the same content.
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "controller/backup/backup_storage.hpp"

namespace volgate::controller {

// A chunk that cannot be read back as it was stored: its file is missing, damaged or not the
// data its name says.
class CorruptChunk : public std::runtime_error {
 public:
  CorruptChunk(const std::string& hash, const std::string& why)
      : std::runtime_error("chunk " + hash + " is corrupt: " + why), hash(hash) {}
  std::string hash;
};

class ChunkStore {
 public:
  // The most a chunk may hold; a bigger put() is a programming error.
  static constexpr size_t kMaxChunkBytes = 64u << 20;

  // The chunks of `storage` (which outlives the store). `zstd_level` as zstd's levels (1 fastest).
  ChunkStore(BackupStorage& storage, int zstd_level);

  // The hex SHA-256 of `data`: the name a chunk holding it gets.
  static std::string hash_of(std::span<const std::byte> data);
  // Whether `text` is a chunk name (64 lowercase hex digits).
  static bool is_hash(const std::string& text);

  struct Put {
    std::string hash;
    uint64_t stored_bytes = 0;  // bytes written to the repository; 0 when it was already there
  };
  // Stores `data` unless a chunk with its hash is already there.
  Put put(std::span<const std::byte> data);
  // Stores `data` under `hash` (computed by the caller) unless it is already there.
  uint64_t put(const std::string& hash, std::span<const std::byte> data);
  // The data of chunk `hash`, checked. Throws CorruptChunk.
  std::vector<std::byte> get(const std::string& hash) const;
  bool contains(const std::string& hash) const;
  // Removes the chunk (nothing when it is gone).
  void remove(const std::string& hash);
  // Moves a chunk found corrupt out of the store (kept aside for an operator to look at): from
  // then on the store does not have it, so the next backup with its data stores it again
  // instead of naming the damaged object. Nothing when it is gone.
  void quarantine(const std::string& hash);
  // Every chunk name in the store.
  std::vector<std::string> list() const;
  // Makes these chunks durable under their names: after it, they survive a crash.
  void sync_folders_of(const std::vector<std::string>& hashes) const;
  // Where a chunk is: its file in a directory storage (tests damage it on purpose).
  std::string path_of(const std::string& hash) const;

 private:
  BackupStorage& storage_;
  int zstd_level_;
};

}  // namespace volgate::controller
