#include "controller/backup/backup_repository.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <spdlog/spdlog.h>
#include <system_error>

#include "controller/backup/atomic_file.hpp"

namespace volgate::controller {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// Backup ids are UUIDs; anything else would be a path in a file name.
void check_id(const std::string& id) {
  if (id.empty() || id.size() > 64 || id.find_first_not_of("0123456789abcdef-") != std::string::npos)
    throw std::invalid_argument("not a backup id: '" + id.substr(0, 80) + "'");
}

std::string created(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::system_error(errno, std::generic_category(), "create " + dir);
  return dir;
}

UniqueFd lock_directory(const std::string& dir) {
  const std::string path = created(dir) + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw std::system_error(errno, std::generic_category(), "open " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw std::runtime_error("backup repository " + dir + " is in use by another process");
    throw std::system_error(errno, std::generic_category(), "lock " + path);
  }
  return fd;
}

// A manifest is small next to the data it names: 1 MiB holds ~10 000 chunks (40 GiB of data)
// at ~100 bytes each; a volume of 1 PiB would need 256 MiB.
constexpr size_t kMaxManifestBytes = size_t{512} << 20;

}  // namespace

BackupRepository::BackupRepository(const BackupRepositoryConfig& config)
    : directory_(config.directory),
      lock_(lock_directory(directory_)),
      chunks_(directory_ + "/chunks", config.zstd_level) {
  created(directory_ + "/manifests");
  created(directory_ + "/manifests/.tmp");
}

std::string BackupRepository::manifest_path(const std::string& backup_id) const {
  check_id(backup_id);
  return directory_ + "/manifests/" + backup_id + ".json";
}

bool BackupRepository::has_manifest(const std::string& backup_id) const {
  return ::access(manifest_path(backup_id).c_str(), F_OK) == 0;
}

BackupManifest BackupRepository::manifest(const std::string& backup_id) const {
  try {
    BackupManifest m = BackupManifest::from_json(read_small_file(manifest_path(backup_id), kMaxManifestBytes));
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
      spdlog::error("{}; moved aside to {}/.corrupt", e.what(), chunks_.directory());
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
  check_id(backup_id);
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
  write_file_atomically(repository_.directory_ + "/manifests/.tmp", repository_.manifest_path(manifest_.backup_id),
                        parts);
}

BackupRepository::Removal BackupRepository::remove(const std::string& backup_id) {
  const std::string path = manifest_path(backup_id);
  std::lock_guard lock(mutex_);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw std::system_error(errno, std::generic_category(), "remove " + path);
  sync_directory(directory_ + "/manifests");

  // What stays: every chunk a manifest or a writer names. A manifest that cannot be read stops
  // the sweep (its chunks would look unused): the backup is gone, the garbage waits.
  std::set<std::string> live;
  for (const auto& [hash, count] : pins_) live.insert(hash);
  const std::string dir = directory_ + "/manifests";
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) throw std::system_error(errno, std::generic_category(), "list " + dir);
  while (const dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (!name.ends_with(".json")) continue;
    for (const auto& c : manifest(name.substr(0, name.size() - 5)).chunks) live.insert(c.hash);
  }
  Removal removal;
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
