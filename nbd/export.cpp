#include "nbd/export.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "nbd/protocol.hpp"

namespace volgate::nbd {

ExportTable::ExportTable(ExportTable&& other) noexcept {
  std::lock_guard lock(other.mutex_);
  exports_ = std::exchange(other.exports_, std::make_shared<const List>());
  default_ = std::move(other.default_);
  had_default_ = std::exchange(other.had_default_, false);
}

std::shared_ptr<const Export> ExportTable::add(Export e) {
  if (e.name.empty()) throw std::invalid_argument("export name must not be empty");
  if (e.name.size() > kMaxStringLength)
    throw std::invalid_argument("export name longer than 4096 bytes");
  if (!e.counters) e.counters = std::make_shared<ExportCounters>();
  auto added = std::make_shared<const Export>(std::move(e));
  std::lock_guard lock(mutex_);
  if (find_locked(added->name))
    throw std::invalid_argument("export '" + added->name + "' is defined twice");
  auto next = std::make_shared<List>(*exports_);
  next->push_back(added);
  exports_ = std::move(next);
  if (!had_default_) {
    default_ = added;
    had_default_ = true;
  }
  return added;
}

ExportTable::Removal ExportTable::remove(std::string_view name, bool even_if_connected) {
  std::lock_guard lock(mutex_);
  const Export* found = find_locked(name);
  if (!found) return {Removal::Outcome::not_found, nullptr, 0};
  const uint32_t connections = found->counters->connections.load();
  if (connections > 0 && !even_if_connected) return {Removal::Outcome::busy, nullptr, connections};
  auto next = std::make_shared<List>();
  std::shared_ptr<const Export> removed;
  for (const auto& e : *exports_) {
    if (e.get() == found)
      removed = e;
    else
      next->push_back(e);
  }
  exports_ = std::move(next);
  if (default_ == removed) default_.reset();  // no other export inherits the empty name
  return {Removal::Outcome::removed, std::move(removed), connections};
}

std::shared_ptr<const Export> ExportTable::find(std::string_view name) const {
  std::lock_guard lock(mutex_);
  if (name.empty()) return default_;
  for (const auto& e : *exports_)
    if (e->name == name) return e;
  return nullptr;
}

std::shared_ptr<const ExportTable::List> ExportTable::all() const {
  std::lock_guard lock(mutex_);
  return exports_;
}

bool ExportTable::attach(const Export& e) const {
  std::lock_guard lock(mutex_);
  if (find_locked(e.name) != &e) return false;
  e.counters->connections.fetch_add(1);
  return true;
}

void ExportTable::detach(const Export& e) const { e.counters->connections.fetch_sub(1); }

const Export* ExportTable::find_locked(std::string_view name) const {
  for (const auto& e : *exports_)
    if (e->name == name) return e.get();
  return nullptr;
}

uint16_t transmission_flags(const backends::DeviceCapabilities& caps, bool structured_replies) {
  uint16_t flags = kFlagHasFlags | kFlagSendFlush;
  if (caps.read_only) {
    flags |= kFlagReadOnly;
  } else {
    if (caps.can_fua) flags |= kFlagSendFua;
    if (caps.can_trim) flags |= kFlagSendTrim;
    if (caps.can_zero) flags |= kFlagSendWriteZeroes;
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
