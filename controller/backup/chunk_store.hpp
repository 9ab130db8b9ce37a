#pragma once
// Content-addressed chunks on a filesystem: each distinct piece of volume data is stored once,
// in a file named by the SHA-256 of the data, compressed with zstd, so a repository shared by
// many backups (and by the incrementals of one volume) holds every distinct chunk once.
//
// Layout: DIR/ab/abcdef... (the hex digest, under a folder named by its first two digits so
// that no folder grows past a few thousand entries), DIR/.tmp/ for files being written and
// DIR/.corrupt/ for chunks a restore found damaged.
//
// A chunk file is: magic "VGCHUNK1" | encoding (0 raw, 1 zstd) | 3 bytes zero | raw length (u32
// LE) | stored length (u64 LE) | SHA-256 of the stored bytes | stored bytes. The header's digest
// is the per-chunk checksum of what is on disk; the name is the digest of the data once
// decompressed. get() checks both, so a flipped byte, a truncated file, a file under another
// chunk's name or a zstd frame that decompresses to something else are all refused, by name.
//
// Writes are atomic: the file is written under a random name in .tmp, fsynced and renamed to
// its name; the folders are fsynced by sync_folders_of() before anything names the chunks (a
// backup's manifest), once per folder rather than once per chunk. A chunk under its final name
// is therefore always whole; what a crash leaves in .tmp is removed when the store is opened
// (no writer exists then).
//
// Thread-safe: concurrent put() of the same data race only on rename(), where either file wins
// with the same content.
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

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

  // Creates the folders if needed and removes leftover temporary files. `zstd_level` as zstd's
  // levels (1 fastest). Throws std::system_error naming the path.
  ChunkStore(std::string directory, int zstd_level);

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
  // Moves a chunk found corrupt out of the store, into DIR/.corrupt/ (kept for an operator to
  // look at): from then on the store does not have it, so the next backup with its data stores
  // it again instead of naming the damaged file. Nothing when it is gone.
  void quarantine(const std::string& hash);
  // Every chunk name in the store.
  std::vector<std::string> list() const;
  // fsyncs the folders that hold these chunks' names: after it, they survive a crash.
  void sync_folders_of(const std::vector<std::string>& hashes) const;
  // The file of a chunk (tests damage it on purpose).
  std::string path_of(const std::string& hash) const;

  const std::string& directory() const { return directory_; }

 private:
  std::string directory_;
  int zstd_level_;
};

}  // namespace volgate::controller
