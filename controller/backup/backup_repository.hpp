#pragma once
// Where backups live: content-addressed chunks (chunk_store.hpp) and one manifest per backup
// (backup_manifest.hpp, written atomically as a backup's last step), in a storage of one of two
// kinds (backup_storage.hpp): a directory of its own (by default STATE_DIR/backups) or a Ceph
// pool. The storage's lock keeps it to one controller at a time.
//
// Deleting a backup removes its manifest, then every chunk that no manifest and no backup being
// written names. The race with a backup being written (it may name a chunk that is stored
// already, and that is about to be deleted because the only manifest naming it is going) is
// closed by pins: a writer pins each hash under the repository's lock before it checks whether
// the chunk is there, and deletion decides and deletes under the same lock, treating pinned
// hashes as live. So either the deletion runs first and the writer then finds the chunk gone
// and stores it again, or the pin comes first and the chunk stays. A backup that died before
// its manifest was written leaves chunks no manifest names: the next deletion sweeps them too
// (it compares every chunk in the store with every manifest, not only the deleted one's).
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "controller/backup/backup_manifest.hpp"
#include "controller/backup/chunk_store.hpp"

namespace volgate::controller {

struct BackupRepositoryConfig {
  std::string kind = "directory";  // or "rados"
  std::string directory;  // directory: default STATE_DIR/backups
  // rados: the Ceph pool, and the cluster's conf and cephx user as the RBD pools take them.
  std::string rados_pool;
  std::string ceph_conf;
  std::string ceph_client = "admin";
  std::string ceph_keyring;  // empty: the keyring the conf names
  // Who takes the lock (finish_config: this host and the state directory), so that a controller
  // restarted after a crash knows its own lock.
  std::string owner;
  // zstd level of the chunks: 1 is zstd's fastest, and on volume data (zeros, text, binaries)
  // it stores within a few percent of level 3 at about twice the speed.
  int zstd_level = 1;
};

class BackupRepository {
 public:
  // 4 MiB: RBD's default object size (an RBD diff then maps onto whole chunks), large enough
  // that a chunk's fixed costs (a file, an fsync, a rename, a header) stay under 1 % of its
  // time, and small enough that a volume changed in a few places stores little in an
  // incremental. A 4 GiB volume has 1024 chunks; its manifest is ~100 KiB.
  static constexpr uint32_t kChunkBytes = 4u << 20;

  // Opens (creating if needed) the repository and locks it. Throws std::runtime_error when
  // another process holds it, std::system_error naming a path it cannot create.
  explicit BackupRepository(const BackupRepositoryConfig& config);
  // Over a storage opened already (tests).
  BackupRepository(std::unique_ptr<BackupStorage> storage, int zstd_level);

  // One backup being written. Chunks it stores or names are pinned until it is dropped.
  class Writer {
   public:
    Writer(Writer&&) = delete;
    ~Writer();
    // Stores one piece of the volume: `data` at `offset` (chunk-aligned; zero pieces are left out
    // by the caller). Returns the bytes written to the repository (0 when the chunk was there).
    uint64_t add(uint64_t offset, std::span<const std::byte> data);
    // Names the chunk `earlier` (an entry of the parent's manifest, for a piece the pool says
    // has not changed since) without reading or storing anything. False when the store no
    // longer has that chunk (moved aside as corrupt): the caller reads and add()s the piece.
    bool reuse(const ManifestChunk& earlier);
    // Writes the manifest: from now on the backup exists. Idempotent with the same content.
    void commit();
    const BackupManifest& manifest() const { return manifest_; }
    uint64_t stored_bytes() const { return stored_bytes_; }

   private:
    friend class BackupRepository;
    Writer(BackupRepository& repository, BackupManifest manifest);
    BackupRepository& repository_;
    BackupManifest manifest_;
    std::set<std::string> pinned_;
    uint64_t stored_bytes_ = 0;
  };
  std::unique_ptr<Writer> begin(const std::string& backup_id, const std::string& parent_id, uint64_t volume_bytes);

  bool has_manifest(const std::string& backup_id) const;
  // Throws std::runtime_error naming the backup when its manifest is missing or damaged.
  BackupManifest manifest(const std::string& backup_id) const;
  // One chunk's data, checked. Throws CorruptChunk, after moving a damaged chunk file aside
  // (ChunkStore::quarantine) so that no later backup names it.
  std::vector<std::byte> read_chunk(const std::string& hash);

  struct Removal {
    size_t chunks_removed = 0;
  };
  // Removes the backup's manifest (nothing when it has none: a backup that never finished)
  // and every chunk nothing else names. Idempotent.
  Removal remove(const std::string& backup_id);

  const ChunkStore& chunks() const { return chunks_; }
  const BackupStorage& storage() const { return *storage_; }

 private:
  void pin(const std::string& hash);
  void unpin(const std::set<std::string>& hashes);

  std::unique_ptr<BackupStorage> storage_;  // outlives chunks_ (declared first)
  ChunkStore chunks_;
  mutable std::mutex mutex_;
  std::map<std::string, int> pins_;  // hash -> writers that pinned it
};

}  // namespace volgate::controller
