// The backup repository on real files: chunks stored once and checked on the way back, atomic
// writes, deletion that keeps what other backups (finished or being written) use, and the
// backup and restore of a sparse volume file.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <cstring>

#include "controller/backup/backup_repository.hpp"
#include "controller/backup/directory_storage.hpp"
#include "controller/backup/volume_backup.hpp"
#include "controller/pools/volume_io.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

std::vector<std::byte> text_bytes(size_t n) {
  std::vector<std::byte> out(n);
  const std::string line = "the quick brown fox jumps over the lazy dog\n";
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(line[i % line.size()]);
  return out;
}

class BackupRepositoryTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("backup-repo-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  BackupRepositoryConfig config() const { return {.directory = (dir / "repo").string(), .zstd_level = 1}; }

  fs::path dir;
};

void flip_byte(const std::string& path, off_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(at);
  f.write(&c, 1);
}

TEST_F(BackupRepositoryTest, ChunksAreStoredOnceCompressedAndCheckedOnTheWayBack) {
  DirectoryStorage storage((dir / "repo").string());
  ChunkStore store(storage, 1);
  const auto text = text_bytes(1 << 20);
  auto first = store.put(text);
  EXPECT_EQ(first.hash, ChunkStore::hash_of(text));
  EXPECT_GT(first.stored_bytes, 0u);
  EXPECT_LT(first.stored_bytes, text.size() / 10) << "text compresses";
  EXPECT_EQ(store.put(text).stored_bytes, 0u) << "the same data is stored once";
  EXPECT_EQ(store.get(first.hash), text);

  const auto noise = random_bytes(1 << 20, 1);
  auto second = store.put(noise);
  EXPECT_GE(second.stored_bytes, noise.size()) << "incompressible data is kept as it is";
  EXPECT_LT(second.stored_bytes, noise.size() + 100);
  EXPECT_EQ(store.get(second.hash), noise);
  EXPECT_EQ(store.list().size(), 2u);
}

TEST_F(BackupRepositoryTest, ADamagedChunkIsRefusedByName) {
  DirectoryStorage storage((dir / "repo").string());
  ChunkStore store(storage, 1);
  const auto text = text_bytes(1 << 20);
  const auto noise = random_bytes(1 << 20, 2);
  const std::string a = store.put(text).hash, b = store.put(noise).hash;
  ASSERT_EQ(store.get(a), text);

  // A flipped byte in the data, in the header, a truncated file, another chunk's file under
  // this name, a missing file: each is a CorruptChunk that names the chunk.
  auto expect_corrupt = [&](const std::string& hash, const std::string& why) {
    try {
      store.get(hash);
      ADD_FAILURE() << "read back a damaged chunk (" << why << ")";
    } catch (const CorruptChunk& e) {
      EXPECT_EQ(e.hash, hash);
      EXPECT_NE(std::string(e.what()).find(hash), std::string::npos) << e.what();
    }
  };
  const std::string path = store.path_of(a);
  const std::string saved = (dir / "saved").string();
  fs::copy_file(path, saved);
  flip_byte(path, static_cast<off_t>(fs::file_size(path) - 10));
  expect_corrupt(a, "flipped data byte");
  fs::copy_file(saved, path, fs::copy_options::overwrite_existing);
  ASSERT_EQ(store.get(a), text) << "the same call reads the undamaged file";
  flip_byte(path, 13);
  expect_corrupt(a, "flipped length byte");
  fs::copy_file(saved, path, fs::copy_options::overwrite_existing);
  fs::resize_file(path, fs::file_size(path) - 1);
  expect_corrupt(a, "truncated");
  fs::copy_file(store.path_of(b), path, fs::copy_options::overwrite_existing);
  expect_corrupt(a, "another chunk's file");
  fs::remove(path);
  expect_corrupt(a, "missing");
  EXPECT_EQ(store.get(b), noise);
}

TEST_F(BackupRepositoryTest, LeftoverTemporaryFilesGoAndOnlyOneProcessUsesIt) {
  {
    BackupRepository repository(config());
    EXPECT_THROW(BackupRepository second(config()), std::runtime_error) << "locked by the first";
  }
  const fs::path tmp = fs::path(config().directory) / "chunks" / ".tmp" / "half-written";
  { std::ofstream(tmp) << "half a chunk"; }
  BackupRepository repository(config());
  EXPECT_FALSE(fs::exists(tmp)) << "a crash's half-written file is removed at open";
  EXPECT_TRUE(repository.chunks().list().empty());
}

TEST_F(BackupRepositoryTest, DeletingABackupKeepsWhatOthersUse) {
  BackupRepository repository(config());
  const uint64_t chunk = BackupRepository::kChunkBytes;
  const auto shared = random_bytes(chunk, 10), only_a = random_bytes(chunk, 11), only_b = random_bytes(chunk, 12);
  {
    auto a = repository.begin("aaaa", "", 2 * chunk);
    a->add(0, shared);
    a->add(chunk, only_a);
    a->commit();
    auto b = repository.begin("bbbb", "aaaa", 2 * chunk);
    b->add(0, shared);
    EXPECT_GT(b->add(chunk, only_b), 0u);
    EXPECT_EQ(b->stored_bytes(), only_b.size() + 56) << "the shared chunk is not stored again";
    b->commit();
  }
  EXPECT_EQ(repository.manifest("bbbb").parent_id, "aaaa");
  EXPECT_EQ(repository.chunks().list().size(), 3u);

  EXPECT_EQ(repository.remove("aaaa").chunks_removed, 1u);
  EXPECT_FALSE(repository.has_manifest("aaaa"));
  EXPECT_FALSE(repository.chunks().contains(ChunkStore::hash_of(only_a)));
  EXPECT_EQ(repository.read_chunk(ChunkStore::hash_of(shared)), shared) << "b still uses it";
  EXPECT_EQ(repository.remove("aaaa").chunks_removed, 0u) << "idempotent";
  EXPECT_EQ(repository.remove("bbbb").chunks_removed, 2u);
  EXPECT_TRUE(repository.chunks().list().empty());
}

// The race the pins close: a backup being written names a chunk that only the backup being
// deleted named. It survives the deletion, and the new backup restores whole.
TEST_F(BackupRepositoryTest, ABackupBeingWrittenKeepsTheChunksItNames) {
  BackupRepository repository(config());
  const uint64_t chunk = BackupRepository::kChunkBytes;
  const auto data = random_bytes(chunk, 20);
  {
    auto old = repository.begin("0001", "", chunk);
    old->add(0, data);
    old->commit();
  }
  auto writer = repository.begin("0002", "", chunk);
  EXPECT_EQ(writer->add(0, data), 0u) << "found in the repository";
  EXPECT_EQ(repository.remove("0001").chunks_removed, 0u) << "pinned by the writer";
  writer->commit();
  writer.reset();
  EXPECT_EQ(repository.read_chunk(ChunkStore::hash_of(data)), data);

  // A backup that died before its manifest leaves chunks nothing names: the next deletion
  // sweeps them.
  {
    auto dead = repository.begin("0003", "", chunk);
    dead->add(0, random_bytes(chunk, 21));
  }
  EXPECT_EQ(repository.chunks().list().size(), 2u);
  EXPECT_EQ(repository.remove("0003").chunks_removed, 1u);
  EXPECT_EQ(repository.chunks().list().size(), 1u);
}

// A manifest edited by a flipped bit: chunks moved off the grid or cut short are refused (each
// chunk's own check is of its content, not of where it goes).
TEST_F(BackupRepositoryTest, AManifestWithAChunkOutOfPlaceIsRefused) {
  const uint64_t chunk = BackupRepository::kChunkBytes;
  const std::string hash(64, 'a');
  auto manifest = [&](uint64_t offset, uint64_t length, uint64_t volume) {
    return R"({"format": 1, "backup_id": "x", "parent_id": "", "volume_bytes": )" + std::to_string(volume) +
           R"(, "chunk_bytes": )" + std::to_string(chunk) + R"(, "chunks": [[)" + std::to_string(offset) + ", " +
           std::to_string(length) + R"(, ")" + hash + R"("]]})";
  };
  EXPECT_NO_THROW(BackupManifest::from_json(manifest(chunk, chunk, 4 * chunk)));
  EXPECT_NO_THROW(BackupManifest::from_json(manifest(chunk, 100, chunk + 100)));  // the volume's last bytes
  EXPECT_THROW(BackupManifest::from_json(manifest(7, chunk, 4 * chunk)), std::runtime_error);
  EXPECT_THROW(BackupManifest::from_json(manifest(chunk, chunk - 7, 4 * chunk)), std::runtime_error);
  EXPECT_THROW(BackupManifest::from_json(manifest(4 * chunk, chunk, 4 * chunk)), std::runtime_error);
}

TEST_F(BackupRepositoryTest, ADamagedManifestStopsTheSweep) {
  BackupRepository repository(config());
  const uint64_t chunk = BackupRepository::kChunkBytes;
  for (const char* id : {"00aa", "00bb"}) {
    auto w = repository.begin(id, "", chunk);
    w->add(0, random_bytes(chunk, id[2]));
    w->commit();
  }
  { std::ofstream(fs::path(config().directory) / "manifests" / "00bb.json") << "{not json"; }
  EXPECT_THROW(repository.manifest("00bb"), std::runtime_error);
  // The backup goes (one damaged manifest must not block every delete), its chunks wait.
  EXPECT_EQ(repository.remove("00aa").chunks_removed, 0u);
  EXPECT_THROW(repository.manifest("00aa"), std::runtime_error);
  EXPECT_EQ(repository.chunks().list().size(), 2u) << "nothing deleted on a guess";
}

TEST_F(BackupRepositoryTest, ASparseVolumeIsBackedUpWithoutItsHolesAndRestoredExactly) {
  BackupRepository repository(config());
  const uint64_t chunk = BackupRepository::kChunkBytes;
  const std::string source = (dir / "source.img").string(), target = (dir / "target.img").string();
  const uint64_t size = 10 * chunk + 12345;  // a short last piece
  const auto a = random_bytes(chunk / 2, 30), b = text_bytes(4096), zeros = std::vector<std::byte>(chunk);
  {
    int fd = ::open(source.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    ASSERT_EQ(::pwrite(fd, a.data(), a.size(), static_cast<off_t>(chunk + 100)), static_cast<ssize_t>(a.size()));
    ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(4 * chunk)), static_cast<ssize_t>(chunk));
    ASSERT_EQ(::pwrite(fd, b.data(), b.size(), static_cast<off_t>(size - b.size())), static_cast<ssize_t>(b.size()));
    ::close(fd);
  }
  auto reader = read_volume_file(source);
  auto writer = repository.begin("5555", "", reader->size());
  uint64_t last = 0;
  BackupTally tally = back_up_volume(*reader, *writer, [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last);
    EXPECT_EQ(total, size);
    last = done;
  });
  writer->commit();
  EXPECT_EQ(last, size);
  EXPECT_EQ(tally.chunks, 2u) << "the zero-filled piece is not stored";
  EXPECT_LE(tally.read_bytes, 4 * chunk) << "holes are not read";

  { std::ofstream(target, std::ios::binary) << "old data"; }
  fs::resize_file(target, size + chunk);
  auto out = overwrite_volume_file(target);
  restore_volume(repository, repository.manifest("5555"), *out, {});
  out.reset();
  fs::resize_file(target, size);
  std::ifstream x(source, std::ios::binary), y(target, std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(x), {}, std::istreambuf_iterator<char>(y), {}))
      << "the restored file holds exactly what the source did";

  // One flipped byte in one chunk: the restore stops naming it.
  const BackupManifest manifest = repository.manifest("5555");
  const std::string bad = manifest.chunks[1].hash;
  flip_byte(repository.chunks().path_of(bad), 100);
  auto again = overwrite_volume_file(target);
  try {
    restore_volume(repository, manifest, *again, {});
    ADD_FAILURE() << "restored a damaged chunk";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  // Moved aside: the next backup of the same data stores the chunk again, and restores.
  EXPECT_FALSE(repository.chunks().contains(bad));
  EXPECT_TRUE(fs::exists(fs::path(config().directory) / "chunks" / ".corrupt" / bad));
  auto reader2 = read_volume_file(source);
  auto writer2 = repository.begin("6666", "5555", reader2->size());
  EXPECT_GT(back_up_volume(*reader2, *writer2, {}).stored_bytes, 0u);
  writer2->commit();
  auto third = overwrite_volume_file(target);
  EXPECT_NO_THROW(restore_volume(repository, repository.manifest("6666"), *third, {}));
}

// A volume in memory whose reader knows which pieces changed since an earlier snapshot, as an
// RBD reader given its parent backup's snapshot does; it counts what it is asked to read.
class DiffingReader final : public VolumeReader {
 public:
  DiffingReader(std::vector<std::byte> data, std::set<uint64_t> changed_pieces)
      : data_(std::move(data)), changed_(std::move(changed_pieces)) {}
  uint64_t size() const override { return data_.size(); }
  bool may_hold_data(uint64_t, uint64_t) override { return true; }
  bool changes_known() const override { return true; }
  bool may_have_changed(uint64_t offset, uint64_t) override { return changed_.count(offset) > 0; }
  void read(uint64_t offset, std::span<std::byte> out) override {
    std::memcpy(out.data(), data_.data() + offset, out.size());
    reads.push_back(offset);
  }
  std::vector<uint64_t> reads;

 private:
  std::vector<std::byte> data_;
  std::set<uint64_t> changed_;
};

TEST_F(BackupRepositoryTest, AnIncrementalFromADiffReadsOnlyWhatChanged) {
  BackupRepository repository(config());
  const uint64_t chunk = BackupRepository::kChunkBytes;
  std::vector<std::byte> volume(4 * chunk);  // pieces 0, 1 and 3 hold data, 2 is zeros
  for (uint64_t piece : {0, 1, 3}) {
    auto bytes = random_bytes(chunk, static_cast<unsigned>(piece));
    std::copy(bytes.begin(), bytes.end(), volume.begin() + static_cast<ptrdiff_t>(piece * chunk));
  }
  DiffingReader first(volume, {0, chunk, 2 * chunk, 3 * chunk});
  auto w1 = repository.begin("1111", "", first.size());
  back_up_volume(first, *w1, {}, 0, nullptr);  // no parent: a full read whatever the reader knows
  w1->commit();
  EXPECT_EQ(first.reads.size(), 4u);

  // Piece 1 rewritten, piece 2 written: only those two are read, 0 and 3 named from the parent.
  auto changed = random_bytes(chunk, 77);
  std::copy(changed.begin(), changed.end(), volume.begin() + static_cast<ptrdiff_t>(chunk));
  std::copy(changed.begin(), changed.end(), volume.begin() + static_cast<ptrdiff_t>(2 * chunk));
  const BackupManifest parent = repository.manifest("1111");
  DiffingReader second(volume, {chunk, 2 * chunk});
  auto w2 = repository.begin("2222", "1111", second.size());
  BackupTally tally = back_up_volume(second, *w2, {}, 0, &parent);
  w2->commit();
  EXPECT_EQ(second.reads, (std::vector<uint64_t>{chunk, 2 * chunk}));
  EXPECT_EQ(tally.read_bytes, 2 * chunk);
  EXPECT_EQ(tally.chunks, 4u);
  EXPECT_EQ(tally.reused_chunks, 2u);
  EXPECT_GT(tally.stored_bytes, 0u);
  EXPECT_LE(tally.stored_bytes, chunk + 100) << "the same data at pieces 1 and 2 is one chunk";
  const std::string restored_path = (dir / "restored.img").string();
  { std::ofstream(restored_path, std::ios::binary); }
  fs::resize_file(restored_path, volume.size());
  auto out = overwrite_volume_file(restored_path);
  restore_volume(repository, repository.manifest("2222"), *out, {});
  out.reset();
  std::ifstream in(restored_path, std::ios::binary);
  std::vector<char> back(volume.size());
  in.read(back.data(), static_cast<std::streamsize>(back.size()));
  EXPECT_EQ(std::memcmp(back.data(), volume.data(), volume.size()), 0) << "the incremental restores the volume";

  // The parent's chunk of piece 3 is lost (found corrupt since): that piece is read after all.
  fs::remove(repository.chunks().path_of(parent.chunks.back().hash));
  DiffingReader third(volume, {});
  auto w3 = repository.begin("3333", "2222", third.size());
  const BackupManifest parent2 = repository.manifest("2222");
  tally = back_up_volume(third, *w3, {}, 0, &parent2);
  w3->commit();
  EXPECT_EQ(third.reads, (std::vector<uint64_t>{3 * chunk}));
  EXPECT_EQ(tally.reused_chunks, 3u);
  EXPECT_TRUE(repository.chunks().contains(parent.chunks.back().hash)) << "stored again";
}

}  // namespace
}  // namespace volgate::controller
