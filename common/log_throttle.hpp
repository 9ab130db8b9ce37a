#pragma once
// One log line per interval for an event that can come in floods (failed accepts, refused
// connections), counting the events in between so that the line can say how many there were.
// A flood then costs a line a second instead of a disk and a core. Not thread-safe: each
// throttle belongs to one thread (the one that accepts connections).
#include <chrono>
#include <cstdint>
#include <optional>

namespace volgate {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LogThrottle(Clock::duration interval) : interval_(interval) {}

  // Counts one event. When a line is due (the first event, or the first one an interval after
  // the last line), returns how many events it covers: this one and those held back since the
  // last line. Otherwise returns zero.
  uint64_t count(Clock::time_point now = Clock::now());

 private:
  const Clock::duration interval_;
  std::optional<Clock::time_point> last_line_;
  uint64_t held_back_ = 0;
};

}  // namespace volgate
