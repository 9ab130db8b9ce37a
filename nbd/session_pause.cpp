#include "nbd/session_pause.hpp"

namespace volgate::nbd {

void SessionPause::expect() {
  std::lock_guard lock(mutex_);
  ++expected_;
}

bool SessionPause::report(PausedConnection connection) {
  std::lock_guard lock(mutex_);
  ++reported_;
  changed_.notify_all();
  if (over_) return false;
  connections_.push_back(std::move(connection));
  return true;
}

void SessionPause::closed() {
  std::lock_guard lock(mutex_);
  ++reported_;
  changed_.notify_all();
}

void SessionPause::begin_pending() {
  std::lock_guard lock(mutex_);
  ++pending_;
}

void SessionPause::end_pending() {
  std::lock_guard lock(mutex_);
  --pending_;
  changed_.notify_all();
}

std::vector<PausedConnection> SessionPause::wait(std::chrono::steady_clock::time_point deadline,
                                                 const std::function<bool()>& quiet) {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait_until(lock, deadline, [this] { return settled(); });
    if (!settled() || quiet() || std::chrono::steady_clock::now() >= deadline) break;
    // A session in transit reports (or is expected) before it stops counting as in transit.
    changed_.wait_for(lock, std::chrono::milliseconds(1));
  }
  over_ = true;
  return std::move(connections_);
}

size_t SessionPause::missing() const {
  std::lock_guard lock(mutex_);
  return expected_ - reported_;
}

}  // namespace volgate::nbd
