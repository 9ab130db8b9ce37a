#include "controller/domain/metadata.hpp"

#include <cctype>
#include <cstdint>
#include <cstdio>

namespace volgate::controller {
namespace {

// Code points in UTF-8 text: bytes that do not continue a sequence.
size_t characters(std::string_view text) {
  size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::optional<std::string> metadata_key_problem(std::string_view key) {
  if (key.empty()) return "a metadata key must not be empty";
  if (key.size() > kMaxMetadataKeyLength)
    return "a metadata key is at most " + std::to_string(kMaxMetadataKeyLength) + " characters";
  for (char c : key)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("-_:. /").find(c) == std::string_view::npos)
      return "a metadata key may hold only letters, digits and '-_:. /'";
  return std::nullopt;
}

std::optional<std::string> metadata_value_problem(std::string_view value) {
  if (characters(value) > kMaxMetadataValueLength)
    return "a metadata value is at most " + std::to_string(kMaxMetadataValueLength) + " characters";
  return std::nullopt;
}

std::string metadata_etag(const Metadata& metadata) {
  // FNV-1a over "key\0value\0..." in key order: stable, and collisions would only let a
  // stale If-Match through, never refuse a fresh one.
  uint64_t hash = 0xcbf29ce484222325ULL;
  auto add = [&](std::string_view text) {
    for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ULL;
    hash = (hash ^ 0) * 0x100000001b3ULL;
  };
  for (const auto& [key, value] : metadata) {
    add(key);
    add(value);
  }
  char text[24];
  std::snprintf(text, sizeof text, "\"%016llx\"", static_cast<unsigned long long>(hash));
  return text;
}

bool etag_matches(std::string_view if_match, std::string_view etag) {
  auto bare = [](std::string_view tag) {
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"') tag = tag.substr(1, tag.size() - 2);
    return tag;
  };
  return if_match == "*" || bare(if_match) == bare(etag);
}

}  // namespace volgate::controller
