#include "controller/backup/backup_repository.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "backends/rados_cluster.hpp"
#include "controller/backup/directory_storage.hpp"
#include "controller/backup/rados_storage.hpp"

namespace volgate::controller {
namespace {

// Backup ids are UUIDs; anything else would be a path in a file name or another object's name.
const std::string& checked_id(const std::string& id) {
  if (id.empty() || id.size() > 64 || id.find_first_not_of("0123456789abcdef-") != std::string::npos)
    throw std::invalid_argument("not a backup id: '" + id.substr(0, 80) + "'");
  return id;
}

// A manifest is small next to the data it names: 1 MiB holds ~10 000 chunks (40 GiB of data)
// at ~100 bytes each; a volume of 1 PiB would need 256 MiB.
constexpr size_t kMaxManifestBytes = size_t{512} << 20;
constexpr auto kManifests = BackupStorage::Space::manifests;

}  // namespace

std::unique_ptr<BackupStorage> open_backup_storage(const BackupRepositoryConfig& config) {
  if (config.kind == "directory") return std::make_unique<DirectoryStorage>(config.directory);
  if (config.kind != "rados") throw std::runtime_error("backup repository kind '" + config.kind + "' is unknown");
  backends::RadosClientOptions client{.ceph_conf = std::nullopt, .ceph_id = config.ceph_client, .keyring = std::nullopt};
  if (!config.ceph_conf.empty()) client.ceph_conf = config.ceph_conf;
  if (!config.ceph_keyring.empty()) client.keyring = config.ceph_keyring;
  return std::make_unique<RadosStorage>(client, config.rados_pool, config.owner);
}

BackupRepository::BackupRepository(const BackupRepositoryConfig& config)
    : BackupRepository(open_backup_storage(config), config.zstd_level) {}

BackupRepository::BackupRepository(std::unique_ptr<BackupStorage> storage, int zstd_level)
    : storage_(std::move(storage)), chunks_(*storage_, zstd_level) {}

bool BackupRepository::has_manifest(const std::string& backup_id) const {
  return storage_->contains(kManifests, checked_id(backup_id));
}

BackupManifest BackupRepository::manifest(const std::string& backup_id) const {
  try {
    auto text = storage_->get(kManifests, checked_id(backup_id), kMaxManifestBytes);
    if (!text) throw std::runtime_error(storage_->where(kManifests, backup_id) + " is missing");
    BackupManifest m = BackupManifest::from_json(*text);
    if (m.backup_id != backup_id) throw std::runtime_error("it is the manifest of backup " + m.backup_id);
    return m;
  } catch (const std::exception& e) {
    throw std::runtime_error("backup " + backup_id + ": its manifest cannot be read: " + e.what());
  }
}

std::vector<std::byte> BackupRepository::read_chunk(const std::string& hash) {
  try {
    return chunks_.get(hash);
  } catch (const CorruptChunk& e) {
    // Under the lock: a writer deciding whether the chunk is there sees it either whole (and
    // damaged, as it was all along) or gone, never half moved.
    std::lock_guard lock(mutex_);
    try {
      chunks_.quarantine(hash);
      spdlog::error("{}; moved aside in the {}", e.what(), storage_->describe());
    } catch (const std::exception& moving) {
      spdlog::error("{}; could not move it aside: {}", e.what(), moving.what());
    }
    throw;
  }
}

void BackupRepository::pin(const std::string& hash) {
  std::lock_guard lock(mutex_);
  ++pins_[hash];
}

void BackupRepository::unpin(const std::set<std::string>& hashes) {
  std::lock_guard lock(mutex_);
  for (const auto& h : hashes)
    if (auto it = pins_.find(h); it != pins_.end() && --it->second == 0) pins_.erase(it);
}

std::unique_ptr<BackupRepository::Writer> BackupRepository::begin(const std::string& backup_id,
                                                                  const std::string& parent_id, uint64_t volume_bytes) {
  checked_id(backup_id);
  BackupManifest m{.backup_id = backup_id, .parent_id = parent_id, .volume_bytes = volume_bytes,
                   .chunk_bytes = kChunkBytes, .chunks = {}};
  return std::unique_ptr<Writer>(new Writer(*this, std::move(m)));
}

BackupRepository::Writer::Writer(BackupRepository& repository, BackupManifest manifest)
    : repository_(repository), manifest_(std::move(manifest)) {}

BackupRepository::Writer::~Writer() { repository_.unpin(pinned_); }

uint64_t BackupRepository::Writer::add(uint64_t offset, std::span<const std::byte> data) {
  if (offset % manifest_.chunk_bytes != 0 || data.empty() || data.size() > manifest_.chunk_bytes ||
      offset + data.size() > manifest_.volume_bytes ||
      (!manifest_.chunks.empty() && offset < manifest_.chunks.back().offset + manifest_.chunks.back().length))
    throw std::invalid_argument("backup piece at " + std::to_string(offset) + " out of place");
  std::string hash = ChunkStore::hash_of(data);
  // Pinned before looking whether it is there: see the header.
  if (pinned_.insert(hash).second) repository_.pin(hash);
  const uint64_t stored = repository_.chunks_.put(hash, data);
  stored_bytes_ += stored;
  manifest_.chunks.push_back({offset, static_cast<uint32_t>(data.size()), std::move(hash)});
  return stored;
}

bool BackupRepository::Writer::reuse(const ManifestChunk& earlier) {
  if (earlier.offset % manifest_.chunk_bytes != 0 || earlier.length == 0 || earlier.length > manifest_.chunk_bytes ||
      earlier.offset + earlier.length > manifest_.volume_bytes ||
      (!manifest_.chunks.empty() && earlier.offset < manifest_.chunks.back().offset + manifest_.chunks.back().length))
    throw std::invalid_argument("backup piece at " + std::to_string(earlier.offset) + " out of place");
  // Pinned before looking whether it is there, as add() does: a deletion then keeps it.
  if (pinned_.insert(earlier.hash).second) repository_.pin(earlier.hash);
  if (!repository_.chunks_.contains(earlier.hash)) return false;
  manifest_.chunks.push_back(earlier);
  return true;
}

void BackupRepository::Writer::commit() {
  // Every chunk it names durable under its name first, those found already there too (their
  // writer may not have synced their folder yet): then the manifest.
  std::vector<std::string> hashes;
  hashes.reserve(manifest_.chunks.size());
  for (const auto& c : manifest_.chunks) hashes.push_back(c.hash);
  repository_.chunks_.sync_folders_of(hashes);
  const std::string text = manifest_.to_json();
  const std::span<const std::byte> parts[] = {std::as_bytes(std::span(text))};
  repository_.storage_->put(kManifests, manifest_.backup_id, parts);
}

BackupRepository::Removal BackupRepository::remove(const std::string& backup_id) {
  checked_id(backup_id);
  std::lock_guard lock(mutex_);
  storage_->remove(kManifests, backup_id);

  // What stays: every chunk a manifest or a writer names. A manifest that cannot be read stops
  // the sweep (its chunks would look unused): the backup is gone, the garbage waits.
  std::set<std::string> live;
  for (const auto& [hash, count] : pins_) live.insert(hash);
  Removal removal;
  for (const auto& id : storage_->list(kManifests)) {
    try {
      for (const auto& c : manifest(id).chunks) live.insert(c.hash);
    } catch (const std::exception& e) {
      spdlog::error("backup {}: removed; its chunks stay until backup {}'s manifest can be read again: {}",
                    backup_id, id, e.what());
      return removal;
    }
  }
  for (const auto& hash : chunks_.list())
    if (!live.count(hash)) {
      chunks_.remove(hash);
      ++removal.chunks_removed;
    }
  spdlog::info("backup {}: removed from the repository with {} chunks nothing else uses", backup_id,
               removal.chunks_removed);
  return removal;
}

}  // namespace volgate::controller
