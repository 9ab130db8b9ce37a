#include "common/size.hpp"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>

namespace volgate {

std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t number = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [rest, ec] = std::from_chars(begin, end, number);
  if (ec != std::errc() || rest == begin) return std::nullopt;

  std::string_view suffix(rest, static_cast<size_t>(end - rest));
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix.front()))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'P': shift = 50; break;
      case 'B': shift = 0; break;
      default: return std::nullopt;
    }
    std::string_view tail = suffix.substr(1);
    if (shift == 0) {
      if (!tail.empty()) return std::nullopt;  // "B" alone means bytes
    } else if (!(tail.empty() || tail == "B" || tail == "iB")) {
      return std::nullopt;
    }
  }
  if (shift && number > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return number << shift;
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char out[32];
  if (unit == 0 || value == static_cast<double>(static_cast<uint64_t>(value)))
    std::snprintf(out, sizeof out, "%llu %s", static_cast<unsigned long long>(value), units[unit]);
  else
    std::snprintf(out, sizeof out, "%.1f %s", value, units[unit]);
  return out;
}

}  // namespace volgate
