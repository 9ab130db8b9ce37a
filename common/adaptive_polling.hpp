#pragma once
// Runs an io_context with adaptive busy-polling: after the last ready handler, the thread keeps
// checking for new events for a short window before it sleeps in epoll_wait.
//
// Why: a request/reply protocol at queue depth 1 pays for two sleeps and two wake-ups per round
// trip, and on a virtual machine a wake-up of a halted vCPU costs tens of microseconds, more than
// serving the request. Polling briefly keeps the thread awake across the client's think time.
// The window adapts (the way QEMU's IOThread polling does): it grows while events keep arriving
// soon after the thread went to sleep, and shrinks when they keep coming much later than the
// largest window, so an idle or slow connection costs no CPU beyond one short poll per sleep.
#include <boost/asio/io_context.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace volgate {

class PollWindow {
 public:
  using Duration = std::chrono::nanoseconds;
  static constexpr Duration kFirstWindow = std::chrono::microseconds(4);
  // Long sleeps in a row before the window shrinks: a single slow reply from a client that is
  // otherwise quick must not throw away the window it took several round trips to grow.
  static constexpr int kLongSleepsBeforeShrink = 4;

  explicit PollWindow(Duration max) : max_(max) {}

  Duration current() const { return window_; }
  // The thread polled for the whole window and found nothing, then slept for `slept`
  // until the next event came (and its handler ran).
  void slept(Duration slept);

 private:
  const Duration max_;
  Duration window_{0};
  int long_sleeps_ = 0;
};

// io_context::run() with polling while worth_polling() says so (a max_window of zero is plain
// run()). worth_polling is asked on the loop's thread each time it runs out of handlers.
// Returns when the io_context runs out of work or is stopped. With `polled_ns`, adds the time
// spent polling (spinning for events, not running handlers) to it; only this thread writes it.
void run_with_adaptive_polling(boost::asio::io_context& io, PollWindow::Duration max_window,
                               const std::function<bool()>& worth_polling,
                               std::atomic<uint64_t>* polled_ns = nullptr);

}  // namespace volgate
