#include "common/adaptive_polling.hpp"

#include <algorithm>

namespace volgate {

void PollWindow::slept(Duration slept) {
  if (slept + window_ <= max_) {
    // The event came within reach of a longer poll: grow towards it.
    long_sleeps_ = 0;
    window_ = window_.count() == 0 ? std::min(kFirstWindow, max_) : std::min(window_ * 2, max_);
  } else if (++long_sleeps_ >= kLongSleepsBeforeShrink) {
    // Events keep coming later than any window we would poll for: polling only burns CPU.
    long_sleeps_ = 0;
    window_ /= 2;
    if (window_ < kFirstWindow) window_ = Duration(0);
  }
}

void run_with_adaptive_polling(boost::asio::io_context& io, PollWindow::Duration max_window) {
  if (max_window.count() <= 0) {
    io.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  PollWindow window(max_window);
  while (!io.stopped()) {
    if (io.poll() > 0) continue;  // handlers ran; there may be more right behind them
    const auto idle_since = Clock::now();
    bool found = false;
    if (window.current().count() > 0) {
      const auto deadline = idle_since + window.current();
      while (!found && Clock::now() < deadline) found = io.poll() > 0;
    }
    if (found) continue;
    // run_one() returns 0 once the io_context has no work left (and is then stopped).
    if (io.run_one() == 0) break;
    window.slept(std::chrono::duration_cast<PollWindow::Duration>(Clock::now() - idle_since) -
                 window.current());
  }
}

}  // namespace volgate
