#pragma once
// Threads that run device calls for a front-end whose callers are synchronous threads of their
// own (nbdkit calls a plugin on its threads and waits for the return value).
//
// Devices are asynchronous and must be called on a thread that runs an io_context marked
// current (backends/block_device.hpp); their completions come back there. A synchronous caller
// therefore posts its call to one of these workers and blocks, alone, until the completion has
// run: other callers go on, on the same worker or another. A device with a thread of its own
// (BlockDevice::home_context, iSCSI) is called there directly, saving a thread change each way,
// as an NBD session does when it moves to its device's thread.
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "backends/block_device.hpp"

namespace volgate::gateway {

class DeviceWorkers {
 public:
  // `threads` workers (at least one), each running its io_context with adaptive busy-polling
  // of up to `poll_max` when the device completes fast (DeviceCapabilities::fast_completions):
  // a sleeping worker takes tens of microseconds to wake on a VM, more than a RAM or page-cache
  // request takes.
  DeviceWorkers(unsigned threads, std::chrono::microseconds poll_max, bool poll);
  // Stops the workers and joins them; calls still blocked in call() must have returned.
  ~DeviceWorkers();
  DeviceWorkers(const DeviceWorkers&) = delete;
  DeviceWorkers& operator=(const DeviceWorkers&) = delete;

  // The io_context that runs the calls for `device` made through the returned slot: its home
  // when it has one, else the workers' in turn (each nbdkit connection keeps one, so its
  // requests share a worker's caches as an NBD session's do).
  boost::asio::io_context& assign(backends::BlockDevice& device);

  // Runs start(done) on `io` and blocks the calling thread until done(ec) has been called
  // (on `io`'s thread), then returns ec. `start` must call done exactly once.
  template <class Start>
  static std::error_code call(boost::asio::io_context& io, Start&& start) {
    Waiter waiter;
    post(io, [&waiter, &start] {
      start([&waiter](std::error_code ec) { waiter.finish(ec); });
    });
    return waiter.wait();
  }

 private:
  // One blocked call. The completion notifies with the lock held, so the caller, which can only
  // return after taking the lock, never leaves (destroying the waiter) while it is notified.
  class Waiter {
   public:
    void finish(std::error_code ec) {
      std::lock_guard lock(mutex_);
      result_ = ec;
      done_ = true;
      finished_.notify_one();
    }
    std::error_code wait() {
      std::unique_lock lock(mutex_);
      finished_.wait(lock, [this] { return done_; });
      return result_;
    }

   private:
    std::mutex mutex_;
    std::condition_variable finished_;
    bool done_ = false;
    std::error_code result_;
  };

  static void post(boost::asio::io_context& io, std::function<void()> work);

  struct Worker;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<unsigned> next_{0};
};

}  // namespace volgate::gateway
