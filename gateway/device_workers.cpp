#include "gateway/device_workers.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include "common/adaptive_polling.hpp"
#include "common/current_context.hpp"

namespace volgate::gateway {

namespace asio = boost::asio;

struct DeviceWorkers::Worker {
  asio::io_context io{1};  // one thread runs it: Asio can skip its locks
  asio::executor_work_guard<asio::io_context::executor_type> keep_running = asio::make_work_guard(io);
  std::thread thread;
};

DeviceWorkers::DeviceWorkers(unsigned threads, std::chrono::microseconds poll_max, bool poll) {
  for (unsigned i = 0; i < std::max(threads, 1u); ++i) {
    workers_.push_back(std::make_unique<Worker>());
    Worker& w = *workers_.back();
    w.thread = std::thread([&w, poll_max, poll] {
      CurrentContextGuard current(w.io);
      run_with_adaptive_polling(w.io, poll ? poll_max : std::chrono::microseconds(0), [poll] { return poll; });
    });
  }
}

DeviceWorkers::~DeviceWorkers() {
  // Devices may keep waits of their own on a worker (an io_uring's eventfd), which would keep
  // run() going for ever: stop outright. No call is in flight by now (see the header).
  for (auto& w : workers_) w->io.stop();
  for (auto& w : workers_) w->thread.join();
}

asio::io_context& DeviceWorkers::assign(backends::BlockDevice& device) {
  if (asio::io_context* home = device.home_context()) return *home;
  return workers_[next_.fetch_add(1, std::memory_order_relaxed) % workers_.size()]->io;
}

void DeviceWorkers::post(asio::io_context& io, std::function<void()> work) {
  asio::post(io, std::move(work));
}

}  // namespace volgate::gateway
