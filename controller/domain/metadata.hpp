#pragma once
// Key/value metadata a user attaches to a volume, kept by the controller and never read by it.
// Keys and values are Cinder's: a key is 1-255 characters of letters, digits and "-_:. /", a
// value is a string of at most 255 characters.
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace volgate::controller {

using Metadata = std::map<std::string, std::string>;

inline constexpr size_t kMaxMetadataKeyLength = 255;
inline constexpr size_t kMaxMetadataValueLength = 255;

// Why `key` cannot be a metadata key, or nothing when it can.
std::optional<std::string> metadata_key_problem(std::string_view key);
// Why `value` cannot be a metadata value (counted in characters, as Cinder does), or nothing.
std::optional<std::string> metadata_value_problem(std::string_view value);

// An entity tag of the whole set (a quoted hash of its keys and values), for ETag/If-Match:
// equal sets give equal tags in every run of every build.
std::string metadata_etag(const Metadata& metadata);
// Whether an If-Match value names `etag` (quotes and a weak "W/" prefix aside, or "*").
bool etag_matches(std::string_view if_match, std::string_view etag);

}  // namespace volgate::controller
