#include "controller/backup/chunk_store.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <system_error>

#include "controller/backup/atomic_file.hpp"
#include "crypto/sha256.hpp"

namespace volgate::controller {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

constexpr char kMagic[8] = {'V', 'G', 'C', 'H', 'U', 'N', 'K', '1'};
constexpr size_t kDigestBytes = 32;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + kDigestBytes;
enum Encoding : uint8_t { kRaw = 0, kZstd = 1 };

using Digest = crypto::Sha256Digest;
static_assert(sizeof(Digest) == kDigestBytes);
using crypto::sha256;

void put_le(std::byte* at, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) at[i] = static_cast<std::byte>(value >> (8 * i));
}

uint64_t get_le(const std::byte* at, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(at[i]) << (8 * i);
  return value;
}

[[noreturn]] void fail(const std::string& what, const std::string& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), what + " " + path);
}

void make_directory(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) fail("create", path);
}

}  // namespace

ChunkStore::ChunkStore(std::string directory, int zstd_level)
    : directory_(std::move(directory)), zstd_level_(zstd_level) {
  make_directory(directory_);
  // Files a crash left half written: no writer exists yet, so every one of them is garbage.
  std::error_code ec;
  std::filesystem::remove_all(directory_ + "/.tmp", ec);
  if (ec) throw std::system_error(ec, "remove " + directory_ + "/.tmp");
  make_directory(directory_ + "/.tmp");
  static constexpr char kHex[] = "0123456789abcdef";
  for (char a : std::string_view(kHex, 16))
    for (char b : std::string_view(kHex, 16)) make_directory(directory_ + "/" + a + b);
  sync_directory(directory_);
}

std::string ChunkStore::hash_of(std::span<const std::byte> data) { return crypto::to_hex(sha256(data)); }

bool ChunkStore::is_hash(const std::string& text) {
  return text.size() == kDigestBytes * 2 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string ChunkStore::path_of(const std::string& hash) const {
  if (!is_hash(hash)) throw std::invalid_argument("not a chunk name: '" + hash.substr(0, 80) + "'");
  return directory_ + "/" + hash.substr(0, 2) + "/" + hash;
}

bool ChunkStore::contains(const std::string& hash) const { return ::access(path_of(hash).c_str(), F_OK) == 0; }

ChunkStore::Put ChunkStore::put(std::span<const std::byte> data) {
  Put result{.hash = hash_of(data)};
  result.stored_bytes = put(result.hash, data);
  return result;
}

uint64_t ChunkStore::put(const std::string& hash, std::span<const std::byte> data) {
  if (data.size() > kMaxChunkBytes) throw std::invalid_argument("a chunk of " + std::to_string(data.size()) + " bytes");
  const std::string path = path_of(hash);
  if (contains(hash)) return 0;

  std::vector<std::byte> compressed(ZSTD_compressBound(data.size()));
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) throw std::bad_alloc();
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, zstd_level_);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  size_t n = ZSTD_compress2(cctx.get(), compressed.data(), compressed.size(), data.data(), data.size());
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  // Data that does not compress (encrypted volumes, media) is kept as it is.
  const bool raw = n >= data.size();
  std::span<const std::byte> stored = raw ? data : std::span<const std::byte>(compressed.data(), n);

  std::array<std::byte, kHeaderBytes> header{};
  std::memcpy(header.data(), kMagic, sizeof kMagic);
  header[8] = static_cast<std::byte>(raw ? kRaw : kZstd);
  put_le(header.data() + 12, data.size(), 4);
  put_le(header.data() + 16, stored.size(), 8);
  const Digest check = sha256(stored);
  std::memcpy(header.data() + 24, check.data(), check.size());
  const std::span<const std::byte> parts[] = {header, stored};
  write_file_atomically(directory_ + "/.tmp", path, parts, /*sync_folder=*/false);
  return header.size() + stored.size();
}

std::vector<std::byte> ChunkStore::get(const std::string& hash) const {
  std::string file;
  try {
    file = read_small_file(path_of(hash), kHeaderBytes + ZSTD_compressBound(kMaxChunkBytes));
  } catch (const std::system_error& e) {
    throw CorruptChunk(hash, e.code() == std::errc::no_such_file_or_directory ? "its file is missing" : e.what());
  } catch (const std::runtime_error& e) {
    throw CorruptChunk(hash, e.what());
  }
  const auto* bytes = reinterpret_cast<const std::byte*>(file.data());
  if (file.size() < kHeaderBytes || std::memcmp(bytes, kMagic, sizeof kMagic) != 0)
    throw CorruptChunk(hash, "no chunk header");
  const auto encoding = static_cast<uint8_t>(bytes[8]);
  const uint64_t raw_length = get_le(bytes + 12, 4);
  const uint64_t stored_length = get_le(bytes + 16, 8);
  if ((encoding != kRaw && encoding != kZstd) || raw_length > kMaxChunkBytes)
    throw CorruptChunk(hash, "its header is damaged");
  if (stored_length != file.size() - kHeaderBytes)
    throw CorruptChunk(hash, "the file holds " + std::to_string(file.size() - kHeaderBytes) +
                                 " bytes of data, its header says " + std::to_string(stored_length));
  std::span<const std::byte> stored(bytes + kHeaderBytes, stored_length);
  if (std::memcmp(sha256(stored).data(), bytes + 24, kDigestBytes) != 0)
    throw CorruptChunk(hash, "its checksum does not match its contents");

  std::vector<std::byte> data(raw_length);
  if (encoding == kRaw) {
    if (stored.size() != raw_length) throw CorruptChunk(hash, "its header is damaged");
    std::memcpy(data.data(), stored.data(), stored.size());
  } else {
    size_t n = ZSTD_decompress(data.data(), data.size(), stored.data(), stored.size());
    if (ZSTD_isError(n)) throw CorruptChunk(hash, std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n != raw_length) throw CorruptChunk(hash, "it decompresses to fewer bytes than its header says");
  }
  if (hash_of(data) != hash) throw CorruptChunk(hash, "its data is not the data its name says");
  return data;
}

void ChunkStore::sync_folders_of(const std::vector<std::string>& hashes) const {
  std::set<std::string> folders;
  for (const auto& h : hashes) folders.insert(path_of(h).substr(0, directory_.size() + 3));
  for (const auto& f : folders) sync_directory(f);
}

void ChunkStore::remove(const std::string& hash) {
  const std::string path = path_of(hash);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("remove", path);
}

void ChunkStore::quarantine(const std::string& hash) {
  const std::string path = path_of(hash);
  const std::string aside = directory_ + "/.corrupt/" + hash;
  make_directory(directory_ + "/.corrupt");
  if (::rename(path.c_str(), aside.c_str()) != 0 && errno != ENOENT) fail("move aside", path);
}

std::vector<std::string> ChunkStore::list() const {
  std::vector<std::string> out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (char a : std::string_view(kHex, 16))
    for (char b : std::string_view(kHex, 16)) {
      const std::string dir = directory_ + "/" + a + b;
      std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
      if (!d) {
        if (errno == ENOENT) continue;
        fail("list", dir);
      }
      while (const dirent* e = ::readdir(d.get()))
        if (is_hash(e->d_name)) out.emplace_back(e->d_name);
    }
  return out;
}

}  // namespace volgate::controller
