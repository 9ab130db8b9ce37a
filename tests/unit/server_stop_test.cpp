// The server's stop: its last flush of every export, and the requests clients left in flight,
// wait for the storage, but not forever.
#include "nbd/server.hpp"

#include <gtest/gtest.h>
#include <libnbd.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

#include "common/current_context.hpp"
#include "forwards_to_memory.hpp"

namespace volgate::nbd {
namespace {

using namespace std::chrono_literals;

// A device whose flush answers as told: at once, with an error, or never (storage that is gone;
// the completion is kept, as a library holding the request would).
class Flushing final : public testing::ForwardsToMemory {
 public:
  enum class Answer { ok, error, never };
  explicit Flushing(Answer answer) : ForwardsToMemory(1 << 20), answer_(answer) {}
  void flush(backends::Completion done) override {
    ++flushes;
    if (answer_ == Answer::ok) return done({});
    if (answer_ == Answer::error) return done(backends::errno_code(EIO));
    held_ = std::move(done);
  }
  int flushes = 0;

 private:
  Answer answer_;
  backends::Completion held_;
};

struct Stopped {
  bool flushed;
  bool unanswered;
  std::chrono::milliseconds took;
};

Stopped serve_and_stop(std::vector<std::shared_ptr<Flushing>> devices) {
  ExportTable table;
  for (size_t i = 0; i < devices.size(); ++i)
    table.add(Export{"e" + std::to_string(i), "", devices[i]});
  ServerLimits limits;
  limits.final_flush_timeout = 300ms;
  Server server(std::move(table), 1, 0us, limits);
  server.stop();
  const auto start = std::chrono::steady_clock::now();
  const bool flushed = server.run();
  return {flushed, server.storage_unanswered(),
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)};
}

TEST(ServerStop, FlushesEveryExport) {
  auto a = std::make_shared<Flushing>(Flushing::Answer::ok);
  auto b = std::make_shared<Flushing>(Flushing::Answer::ok);
  const Stopped stopped = serve_and_stop({a, b});
  EXPECT_TRUE(stopped.flushed);
  EXPECT_FALSE(stopped.unanswered);
  EXPECT_EQ(a->flushes, 1);
  EXPECT_EQ(b->flushes, 1);
}

TEST(ServerStop, AFailedFlushIsReported) {
  auto good = std::make_shared<Flushing>(Flushing::Answer::ok);
  auto bad = std::make_shared<Flushing>(Flushing::Answer::error);
  const Stopped stopped = serve_and_stop({good, bad});
  EXPECT_FALSE(stopped.flushed);
  EXPECT_FALSE(stopped.unanswered);
  EXPECT_EQ(good->flushes, 1);
}

// Storage that never answers no longer holds the stop: it ends after the timeout, failed, and
// says the storage did not answer (the gateway then exits without closing that device).
TEST(ServerStop, StorageThatDoesNotAnswerEndsTheStopAfterTheTimeout) {
  auto good = std::make_shared<Flushing>(Flushing::Answer::ok);
  auto gone = std::make_shared<Flushing>(Flushing::Answer::never);
  const Stopped stopped = serve_and_stop({gone, good});
  EXPECT_FALSE(stopped.flushed);
  EXPECT_TRUE(stopped.unanswered);
  EXPECT_EQ(good->flushes, 1);
  EXPECT_GE(stopped.took, 300ms);
  EXPECT_LT(stopped.took, 5s);
}

// A device whose reads never answer, holding the worker's io_context for the answer as a
// library's completion does (RBD's, the NBD upstream's).
class NeverReads final : public testing::ForwardsToMemory {
 public:
  NeverReads() : ForwardsToMemory(1 << 20) {}
  void read(uint64_t, std::span<std::byte>, backends::Completion done) override {
    guard_.emplace(boost::asio::make_work_guard(current_io_context()));
    held_ = std::move(done);
    reads.fetch_add(1);
  }
  std::atomic<int> reads{0};

 private:
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_;
  backends::Completion held_;
};

// A client's read that the storage never answers keeps its worker from ending: the stop cuts the
// client after the drain, leaves the worker running after the grace, still flushes the exports,
// and reports the storage unanswered (the gateway then ends the process).
TEST(ServerStop, AWorkerHeldByAnUnansweredRequestIsLeftAfterTheGrace) {
  auto device = std::make_shared<NeverReads>();
  ExportTable table;
  table.add(Export{"e", "", device});
  ServerLimits limits;
  limits.drain_timeout = 200ms;
  limits.in_flight_grace = 200ms;
  limits.final_flush_timeout = 300ms;
  // Its worker runs on after the stop and uses it: kept reachable and never destroyed, as the
  // gateway ends the process instead.
  static Server* const server = new Server(std::move(table), 1, 0us, limits);
  const std::string path = ::testing::TempDir() + "server_stop_test." + std::to_string(::getpid()) + ".sock";
  server->listen_unix(path, std::nullopt);
  bool flushed = true;
  std::thread runner([&] { flushed = server->run(); });

  nbd_handle* client = nbd_create();
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(nbd_set_export_name(client, "e"), 0);
  ASSERT_EQ(nbd_connect_unix(client, path.c_str()), 0) << nbd_get_error();
  std::vector<char> buffer(4096);
  ASSERT_GE(nbd_aio_pread(client, buffer.data(), buffer.size(), 0, NBD_NULL_COMPLETION, 0), 0) << nbd_get_error();
  for (int i = 0; i < 500 && device->reads.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(device->reads.load(), 1);

  const auto start = std::chrono::steady_clock::now();
  server->stop();
  runner.join();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(flushed);
  EXPECT_TRUE(server->storage_unanswered());
  EXPECT_GE(took, 400ms);  // the drain, then the grace
  EXPECT_LT(took, 5s);
  nbd_close(client);
  server->remove_socket_files();
}

}  // namespace
}  // namespace volgate::nbd
