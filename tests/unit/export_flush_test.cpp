// The bounded flush of exports (the stop's last flush, an export's removal).
#include "nbd/export_flush.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <memory>
#include <thread>

#include "common/current_context.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::nbd {
namespace {

using namespace std::chrono_literals;

// A device that answers a flush from a thread of its own, as librbd or libnbd do: it posts the
// answer back to the caller's io_context and lets go of its unit of that io_context's work only
// some time after post() has returned.
class LateLettingGo final : public testing::ForwardsToMemory {
 public:
  LateLettingGo() : ForwardsToMemory(1 << 20) {}
  ~LateLettingGo() override {
    if (thread_.joinable()) thread_.join();
  }
  void flush(backends::Completion done) override {
    boost::asio::io_context& caller = current_io_context();
    thread_ = std::thread([&caller, done = std::move(done)]() mutable {
      auto posting = boost::asio::make_work_guard(caller);
      boost::asio::post(caller, [done = std::move(done)]() mutable { done({}); });
      std::this_thread::sleep_for(100ms);
    });  // `posting` goes here, touching the caller's io_context
  }

 private:
  std::thread thread_;
};

// The io_context the answer came to outlives the device thread's hold on it: flush_exports
// returns only once that hold is gone (it used to return at the answer and free the io_context
// under the device thread, which AddressSanitizer reports).
TEST(ExportFlush, WaitsForADeviceThreadToLetGoOfItsWork) {
  auto device = std::make_shared<LateLettingGo>();
  std::vector<std::shared_ptr<const Export>> exports{std::make_shared<const Export>(Export{"e", "", device})};
  const auto start = std::chrono::steady_clock::now();
  const FlushOutcome outcome = flush_exports(exports, 5000ms);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(outcome.ok());
  EXPECT_GE(took, 90ms);
  EXPECT_LT(took, 4s);
}

}  // namespace
}  // namespace volgate::nbd
