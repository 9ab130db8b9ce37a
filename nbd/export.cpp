#include "nbd/export.hpp"

#include <algorithm>
#include <stdexcept>

#include "nbd/protocol.hpp"

namespace volgate::nbd {

void ExportTable::add(Export e) {
  if (e.name.empty()) throw std::invalid_argument("export name must not be empty");
  if (e.name.size() > kMaxStringLength)
    throw std::invalid_argument("export name longer than 4096 bytes");
  for (const auto& existing : exports_)
    if (existing.name == e.name)
      throw std::invalid_argument("export '" + e.name + "' is defined twice");
  exports_.push_back(std::move(e));
}

const Export* ExportTable::find(std::string_view name) const {
  if (name.empty()) return exports_.empty() ? nullptr : &exports_.front();
  auto it = std::find_if(exports_.begin(), exports_.end(),
                         [&](const Export& e) { return e.name == name; });
  return it == exports_.end() ? nullptr : &*it;
}

uint16_t transmission_flags(const backends::DeviceCapabilities& caps, bool structured_replies) {
  uint16_t flags = kFlagHasFlags | kFlagSendFlush;
  if (caps.read_only) {
    flags |= kFlagReadOnly;
  } else {
    if (caps.can_fua) flags |= kFlagSendFua;
    if (caps.can_trim) flags |= kFlagSendTrim;
    flags |= kFlagSendWriteZeroes;  // always possible, by writing zeroes if nothing faster
    if (caps.can_fast_zero) flags |= kFlagSendFastZero;
  }
  if (caps.can_multi_conn) flags |= kFlagCanMultiConn;
  flags |= kFlagSendCache;  // harmless everywhere: a hint that may do nothing
  // Reads always come back as one data chunk, so "don't fragment" is free to honour.
  if (structured_replies) flags |= kFlagSendDf;
  return flags;
}

BlockSizes block_sizes(const backends::DeviceCapabilities& caps) {
  uint32_t minimum = std::max<uint32_t>(caps.min_block_size, 1);
  return {minimum, std::max(caps.preferred_block_size, minimum), kMaxPayload};
}

}  // namespace volgate::nbd
