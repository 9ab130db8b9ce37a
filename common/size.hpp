#pragma once
// Human-friendly byte sizes: "512M", "4G", "1T", "4096", "10GiB".
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace volgate {

// Parses a size with an optional binary suffix (K, M, G, T, P, optionally followed by "iB" or
// "B"). Returns nothing on anything malformed, zero-free is not required here; callers decide.
std::optional<uint64_t> parse_size(std::string_view text);

// Formats bytes compactly for logs and tables: "1.5 GiB", "4 KiB", "512 B".
std::string format_size(uint64_t bytes);

}  // namespace volgate
