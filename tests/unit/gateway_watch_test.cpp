// GatewayWatch against a fake gateway whose "pid" is a real child process: the watch notices the
// process exit at once (its pidfd) although its check interval is a minute, asks a gateway that
// does not answer again quickly, so a successor's exports are put back as soon as it answers,
// and stops at once.
#include "controller/exports/gateway_watch.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace volgate::controller {
namespace {

using namespace std::chrono_literals;

pid_t spawn_sleeper() {
  char sleep_path[] = "/bin/sleep";
  char seconds[] = "600";
  char* argv[] = {sleep_path, seconds, nullptr};
  pid_t pid = -1;
  if (::posix_spawn(&pid, sleep_path, nullptr, nullptr, argv, environ) != 0) throw std::runtime_error("spawn");
  return pid;
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

class FakeGateway final : public GatewayExports {
 public:
  void publish(const std::string&, const gateway::ExportSpec&, bool, const gateway::control::LuksKey*) override {}
  bool withdraw(const std::string&) override { return false; }
  std::vector<Served> list() override { return {}; }
  int64_t instance() override {
    ++asked;
    const int64_t p = pid.load();
    if (p <= 0) throw std::runtime_error("connection refused");
    return p;
  }
  const std::string& nbd_socket() const override { return socket_; }

  std::atomic<int64_t> pid{-1};
  std::atomic<int> asked{0};

 private:
  std::string socket_ = "/nonexistent";
};

template <class Predicate>
bool within(std::chrono::milliseconds limit, Predicate done) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(GatewayWatch, AGatewayThatDiesIsLookedAtAtOnceAndItsSuccessorRepaired) {
  FakeGateway gateway;
  std::atomic<int> reconciled{0}, unreachable{0};
  gateway.pid = spawn_sleeper();
  GatewayWatch watch(gateway, {.reconcile = [&] { ++reconciled; }, .unreachable = [&] { ++unreachable; }}, 60s, 60s);
  watch.start();
  ASSERT_TRUE(within(5s, [&] { return reconciled == 1; }));  // the first sight of a gateway

  // It dies (and nothing answers): with a minute between checks, only its exit can wake the watch.
  const pid_t first = static_cast<pid_t>(gateway.pid.load());
  gateway.pid = -1;
  kill_and_reap(first);
  EXPECT_TRUE(within(5s, [&] { return unreachable >= 1; })) << "the watch did not notice the gateway's exit";

  // A successor answers: while the gateway is down the watch asks every few milliseconds.
  const pid_t second = spawn_sleeper();
  gateway.pid = second;
  EXPECT_TRUE(within(5s, [&] { return reconciled == 2; })) << "the successor's exports were not put back";
  EXPECT_GE(unreachable.load(), 1);

  const auto t0 = std::chrono::steady_clock::now();
  watch.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "stop() waited for the check interval";
  kill_and_reap(second);
}

TEST(GatewayWatch, AGatewayThatStaysUpIsAskedOnlyEveryCheckInterval) {
  FakeGateway gateway;
  std::atomic<int> reconciled{0};
  const pid_t pid = spawn_sleeper();
  gateway.pid = pid;
  GatewayWatch watch(gateway, {.reconcile = [&] { ++reconciled; }, .unreachable = {}}, 60s, 60s);
  watch.start();
  ASSERT_TRUE(within(5s, [&] { return reconciled == 1; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(gateway.asked.load(), 1) << "asked again although the gateway lives and the interval is a minute";
  watch.stop();
  kill_and_reap(pid);
}

TEST(GatewayWatch, APidItCannotFollowFallsBackToTheInterval) {
  FakeGateway gateway;
  std::atomic<int> reconciled{0}, unreachable{0};
  gateway.pid = 0x3ffffff0;  // no such process: no pidfd
  GatewayWatch watch(gateway, {.reconcile = [&] { ++reconciled; }, .unreachable = [&] { ++unreachable; }}, 50ms,
                     60s);
  watch.start();
  ASSERT_TRUE(within(5s, [&] { return reconciled == 1; }));
  gateway.pid = -1;
  EXPECT_TRUE(within(5s, [&] { return unreachable >= 1; }));
  watch.stop();
}

}  // namespace
}  // namespace volgate::controller
