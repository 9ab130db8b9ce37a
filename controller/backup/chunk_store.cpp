#include "controller/backup/chunk_store.hpp"

#include <zstd.h>

#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>

#include "crypto/sha256.hpp"

namespace volgate::controller {
namespace {

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

}  // namespace

ChunkStore::ChunkStore(BackupStorage& storage, int zstd_level) : storage_(storage), zstd_level_(zstd_level) {}

std::string ChunkStore::hash_of(std::span<const std::byte> data) { return crypto::to_hex(sha256(data)); }

bool ChunkStore::is_hash(const std::string& text) {
  return text.size() == kDigestBytes * 2 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

namespace {
const std::string& checked(const std::string& hash) {
  if (!ChunkStore::is_hash(hash)) throw std::invalid_argument("not a chunk name: '" + hash.substr(0, 80) + "'");
  return hash;
}
constexpr auto kChunks = BackupStorage::Space::chunks;
}  // namespace

std::string ChunkStore::path_of(const std::string& hash) const { return storage_.where(kChunks, checked(hash)); }

bool ChunkStore::contains(const std::string& hash) const { return storage_.contains(kChunks, checked(hash)); }

ChunkStore::Put ChunkStore::put(std::span<const std::byte> data) {
  Put result{.hash = hash_of(data)};
  result.stored_bytes = put(result.hash, data);
  return result;
}

uint64_t ChunkStore::put(const std::string& hash, std::span<const std::byte> data) {
  if (data.size() > kMaxChunkBytes) throw std::invalid_argument("a chunk of " + std::to_string(data.size()) + " bytes");
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
  storage_.put(kChunks, hash, parts);
  return header.size() + stored.size();
}

std::vector<std::byte> ChunkStore::get(const std::string& hash) const {
  std::optional<std::string> object;
  try {
    object = storage_.get(kChunks, checked(hash), kHeaderBytes + ZSTD_compressBound(kMaxChunkBytes));
  } catch (const std::runtime_error& e) {  // std::system_error too
    throw CorruptChunk(hash, e.what());
  }
  if (!object) throw CorruptChunk(hash, "its file is missing");
  const std::string& file = *object;
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
  for (const auto& h : hashes) checked(h);
  storage_.sync_chunks(hashes);
}

void ChunkStore::remove(const std::string& hash) { storage_.remove(kChunks, checked(hash)); }

void ChunkStore::quarantine(const std::string& hash) { storage_.quarantine(checked(hash)); }

std::vector<std::string> ChunkStore::list() const {
  std::vector<std::string> out;
  for (auto& name : storage_.list(kChunks))
    if (is_hash(name)) out.push_back(std::move(name));
  return out;
}

}  // namespace volgate::controller
