#pragma once
// Waiting, at a stop, for worker threads that a device may keep busy forever.
//
// A worker's event loop ends once its clients are gone and nothing it started is pending. A
// device whose storage never answers (an NBD upstream stopped, an OSD gone: librbd waits without
// a timeout) holds the worker's io_context for that answer, and the loop never ends. A stop must
// still end in bounded time: the workers report when they end, the stop waits for them only
// until its deadline and leaves the others behind (detached, still running); their owner then
// ends the process without destroying what those threads use.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace volgate {

class StopDeadline {
 public:
  using Clock = std::chrono::steady_clock;
  // How long after its drain a stop waits for workers still holding requests, by default (the
  // NBD server's and the FUSE front end's): with the final flush's 15 s and a 10 s drain, a
  // stop stays within systemd's 30 s.
  static constexpr std::chrono::seconds kDefaultGrace{3};

  // The stop began: the workers have `allowed` from now to end. The first call counts. From
  // any thread.
  void begin(Clock::duration allowed) {
    std::lock_guard lock(mutex_);
    if (!deadline_) deadline_ = Clock::now() + allowed;
    changed_.notify_all();
  }

  // Called by a worker thread as the last thing it does.
  void worker_ended() {
    std::lock_guard lock(mutex_);
    ended_.push_back(std::this_thread::get_id());
    changed_.notify_all();
  }

  // Waits for the stop to begin, then until every thread in `workers` ended or the deadline
  // passed (threads never started count as ended). Joins the ones that ended and detaches the
  // rest; returns how many were left running.
  size_t join_or_leave(const std::vector<std::thread*>& workers) {
    std::unique_lock lock(mutex_);
    const auto ended = [&](const std::thread& t) {
      return !t.joinable() || std::find(ended_.begin(), ended_.end(), t.get_id()) != ended_.end();
    };
    const auto all_ended = [&] { return std::all_of(workers.begin(), workers.end(), [&](auto* t) { return ended(*t); }); };
    changed_.wait(lock, [&] { return deadline_ || all_ended(); });
    if (deadline_) changed_.wait_until(lock, *deadline_, all_ended);
    size_t left = 0;
    for (std::thread* t : workers) {
      if (!t->joinable()) continue;
      if (ended(*t)) {
        t->join();  // it has ended, or is returning from worker_ended()
      } else {
        t->detach();
        ++left;
      }
    }
    return left;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Clock::time_point> deadline_;
  std::vector<std::thread::id> ended_;
};

}  // namespace volgate
