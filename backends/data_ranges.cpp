#include "backends/data_ranges.hpp"

#include <algorithm>

namespace volgate::backends {

std::vector<Extent> extents_from_data(uint64_t start, uint64_t end, std::vector<DataRange> data,
                                      size_t max_extents) {
  std::sort(data.begin(), data.end(),
            [](const DataRange& a, const DataRange& b) { return a.offset < b.offset; });
  std::vector<Extent> out;
  uint64_t pos = start;
  auto add = [&](uint64_t length, bool hole) {
    if (length == 0) return;
    if (!out.empty() && out.back().hole == hole)
      out.back().length += length;
    else
      out.push_back({length, hole, hole});
  };
  for (const DataRange& range : data) {
    uint64_t from = std::max(range.offset, pos);
    uint64_t to = std::min(range.offset + range.length, end);
    if (to <= from) continue;
    add(from - pos, true);
    add(to - from, false);
    pos = to;
    if (out.size() >= max_extents) return out;  // the client asks again for the rest
  }
  add(end - pos, true);
  return out;
}

}  // namespace volgate::backends
