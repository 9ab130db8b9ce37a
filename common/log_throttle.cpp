#include "common/log_throttle.hpp"

namespace volgate {

uint64_t LogThrottle::count(Clock::time_point now) {
  ++held_back_;
  if (last_line_ && now - *last_line_ < interval_) return 0;
  last_line_ = now;
  const uint64_t covered = held_back_;
  held_back_ = 0;
  return covered;
}

}  // namespace volgate
