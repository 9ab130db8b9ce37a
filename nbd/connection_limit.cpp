#include "nbd/connection_limit.hpp"

namespace volgate::nbd {

ConnectionLimit::Slot& ConnectionLimit::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    release();
    open_ = other.open_;
    other.open_ = nullptr;
  }
  return *this;
}

void ConnectionLimit::Slot::release() {
  if (open_) open_->fetch_sub(1, std::memory_order_relaxed);
  open_ = nullptr;
}

std::optional<ConnectionLimit::Slot> ConnectionLimit::try_open() {
  size_t open = open_.load(std::memory_order_relaxed);
  do {
    if (open >= max_) return std::nullopt;
  } while (!open_.compare_exchange_weak(open, open + 1, std::memory_order_relaxed));
  return Slot(&open_);
}

}  // namespace volgate::nbd
