// The server's stop: its last flush of every export waits for the storage, but not forever.
#include "nbd/server.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

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

}  // namespace
}  // namespace volgate::nbd
