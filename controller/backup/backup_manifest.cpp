#include "controller/backup/backup_manifest.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "controller/backup/chunk_store.hpp"

namespace volgate::controller {

using nlohmann::json;

namespace {
constexpr int kFormat = 1;
}

std::string BackupManifest::to_json() const {
  // [offset, length, hash] triples: a 4 GiB volume's manifest stays near 100 KiB.
  json list = json::array();
  for (const auto& c : chunks) list.push_back(json::array({c.offset, c.length, c.hash}));
  return json{{"format", kFormat},           {"backup_id", backup_id},     {"parent_id", parent_id},
              {"volume_bytes", volume_bytes}, {"chunk_bytes", chunk_bytes}, {"chunks", list}}
      .dump();
}

BackupManifest BackupManifest::from_json(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::runtime_error("the manifest is not JSON");
  try {
    if (j.at("format").get<int>() != kFormat)
      throw std::runtime_error("manifest format " + j.at("format").dump() + " is not one this volgate reads");
    BackupManifest m;
    m.backup_id = j.at("backup_id").get<std::string>();
    m.parent_id = j.at("parent_id").get<std::string>();
    m.volume_bytes = j.at("volume_bytes").get<uint64_t>();
    m.chunk_bytes = j.at("chunk_bytes").get<uint32_t>();
    if (m.chunk_bytes == 0 || m.chunk_bytes > ChunkStore::kMaxChunkBytes)
      throw std::runtime_error("chunk size " + std::to_string(m.chunk_bytes) + " out of range");
    uint64_t end = 0;
    for (const auto& c : j.at("chunks")) {
      ManifestChunk chunk{c.at(0).get<uint64_t>(), c.at(1).get<uint32_t>(), c.at(2).get<std::string>()};
      // Chunks sit on the chunk grid, each as long as the volume lets it be: an entry moved or
      // cut (a flipped bit in the manifest) would otherwise restore shifted data unnoticed,
      // since each chunk's own check is of its content, not of where it goes.
      if (chunk.offset < end || chunk.offset % m.chunk_bytes != 0 || chunk.offset >= m.volume_bytes ||
          chunk.length != std::min<uint64_t>(m.chunk_bytes, m.volume_bytes - chunk.offset) ||
          !ChunkStore::is_hash(chunk.hash))
        throw std::runtime_error("chunk entry at " + std::to_string(chunk.offset) + " is out of place");
      end = chunk.offset + chunk.length;
      m.chunks.push_back(std::move(chunk));
    }
    return m;
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("the manifest is damaged: ") + e.what());
  }
}

}  // namespace volgate::controller
