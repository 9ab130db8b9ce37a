#include "backends/iscsi_multipath_device.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <mutex>
#include <thread>

#include "backends/device_front.hpp"
#include "common/current_context.hpp"

using namespace volgate::backends;
using namespace std::chrono_literals;

namespace {

// How long a test waits for something that must happen. Only a failing test waits this long, so
// it is far above anything a loaded machine (or a sanitizer build) needs.
constexpr auto kPatience = 20s;

// What the fake paths do and saw, shared with the test thread.
struct Lab {
  std::mutex mutex;
  std::vector<bool> comes_up{true, true};        // per path: does connect() succeed?
  std::vector<std::string> identity{"lun-a", "lun-a"};
  std::vector<std::string> log;                   // "submit 1", "fence 1 <key>", "up 0", ...
  std::vector<std::chrono::steady_clock::time_point> submit_times;  // one per "submit" line
  std::vector<uint64_t> keys{0, 0};               // each path's current reservation key
  std::vector<uint64_t> lun_keys;                 // keys registered on the LUN (READ KEYS)
  uint32_t max_transfer_blocks = 0;               // VPD 0xB0, 0: no limit
  bool supports_fua = true;                       // MODE SENSE's DPOFUA bit
  std::vector<class FakePath*> paths;
  boost::asio::io_context* device_io = nullptr;

  void note(std::string line) {
    std::lock_guard lock(mutex);
    log.push_back(std::move(line));
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex);
    return log;
  }
  size_t count(const std::string& prefix) {
    size_t n = 0;
    for (const auto& line : lines()) n += line.rfind(prefix, 0) == 0;
    return n;
  }
  // Index of the first log line starting with `prefix`, or -1.
  long first(const std::string& prefix) {
    auto all = lines();
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].rfind(prefix, 0) == 0) return static_cast<long>(i);
    return -1;
  }
  bool wait_for(const std::string& prefix, size_t n = 1, std::chrono::milliseconds limit = kPatience) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (count(prefix) < n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
  // Runs `work` on the device's thread, where the paths live, and waits for it.
  void on_device(std::function<void()> work) {
    std::promise<void> done;
    boost::asio::post(*device_io, [&] {
      work();
      done.set_value();
    });
    done.get_future().wait();
  }
};

// A path that comes up (or not) as the lab says, and holds requests until the test answers.
class FakePath final : public IscsiPath {
 public:
  FakePath(boost::asio::io_context& io, size_t index, std::string portal, Owner& owner, Lab& lab)
      : IscsiPath(index, std::move(portal)), io_(io), owner_(owner), lab_(lab) {}

  void connect(uint64_t key) override {
    lab_.note("connect " + std::to_string(index_));
    state_ = State::checking;
    boost::asio::post(io_, [this, key] {
      if (state_ != State::checking) return;
      bool up;
      {
        std::lock_guard lock(lab_.mutex);
        up = lab_.comes_up[index_];
        identity_ = lab_.identity[index_];
        max_transfer_blocks_ = lab_.max_transfer_blocks;
        supports_fua_ = lab_.supports_fua;
        if (up) {
          lab_.keys[index_] = key;
          if (key != 0) lab_.lun_keys.push_back(key);
          registered_keys_ = lab_.lun_keys;
        }
      }
      if (!up) {
        state_ = State::down;
        last_error_ = "unreachable";
        return owner_.path_down(*this, "unreachable", 0);
      }
      state_ = State::up;
      key_ = key;
      registered_ = key != 0;
      blocks_ = 2048;
      block_size_ = 512;
      lab_.note("up " + std::to_string(index_));
      owner_.path_up(*this);
    });
  }
  void submit(IscsiIo* io) override {
    io->path = this;
    held_.push_back(io);
    {
      std::lock_guard lock(lab_.mutex);
      lab_.submit_times.push_back(std::chrono::steady_clock::now());
    }
    lab_.note("submit " + std::to_string(index_) + " " + std::to_string(io->offset) + "+" +
              std::to_string(io->length) + (io->kind == IscsiIo::Kind::flush ? " flush" : "") +
              (io->fua ? " fua" : ""));
  }
  void fence(uint64_t key, std::function<void(bool)> done) override {
    lab_.note("fence " + std::to_string(index_) + " " + std::to_string(key));
    {
      std::lock_guard lock(lab_.mutex);
      std::erase(lab_.lun_keys, key);
    }
    boost::asio::post(io_, [done = std::move(done)] { done(true); });
  }
  void check() override { lab_.note("check " + std::to_string(index_)); }
  void enforce_timeouts(std::chrono::steady_clock::time_point) override {}
  void abandon(const std::string& why) override { close(State::down, why); }
  void refuse(const std::string& why) override { close(State::refused, why); }
  void unregister(std::function<void()> done) override { done(); }

  bool holds_requests() const { return !held_.empty(); }
  // Answers every request held here with BUSY (the target's queue is full).
  void answer_busy_all() {
    for (IscsiIo* io : std::exchange(held_, {})) owner_.io_busy(io);
  }
  // Answers every request held here.
  void complete_all() {
    for (IscsiIo* io : std::exchange(held_, {})) {
      ++counters_.ios;
      owner_.io_done(io, {});
    }
  }

 private:
  void close(State next, const std::string& why) {
    if (state_ == State::down || state_ == State::refused) {
      state_ = next;
      return;
    }
    state_ = next;
    uint64_t key = std::exchange(registered_, false) ? key_ : 0;
    lab_.note("down " + std::to_string(index_));
    owner_.path_down(*this, why, key);
    for (IscsiIo* io : std::exchange(held_, {})) {
      ++counters_.failovers;
      owner_.io_retry(io);
    }
  }

  boost::asio::io_context& io_;
  Owner& owner_;
  Lab& lab_;
  std::vector<IscsiIo*> held_;
};

// The caller's side: a worker thread running an io_context marked current, like the server's.
struct Client {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> busy{io.get_executor()};
  std::thread thread{[this] {
    volgate::CurrentContextGuard guard(io);
    io.run();
  }};
  alignas(4096) std::byte buffer[65536] = {};

  ~Client() {
    busy.reset();
    thread.join();
  }
  // Returns once everything posted to the client's thread before it has run.
  void sync() {
    std::promise<void> done;
    boost::asio::post(io, [&] { done.set_value(); });
    done.get_future().wait();
  }
  template <class Target>  // a BlockDevice or a DeviceFront
  std::future<std::error_code> write(Target& device, uint64_t offset, size_t length = 4096,
                                     bool fua = false) {
    auto result = std::make_shared<std::promise<std::error_code>>();
    auto future = result->get_future();
    boost::asio::post(io, [this, &device, offset, length, fua, result] {
      device.write(offset, std::span<const std::byte>(buffer, length), {.fua = fua},
                   [result](std::error_code ec) { result->set_value(ec); });
    });
    return future;
  }
};

IscsiOptions two_portals() {
  IscsiOptions options;
  options.portals = {"a:3260", "b:3260"};
  options.target = "iqn.2026-01.org.volgate.test:unit";
  options.lun = 1;
  options.no_path_timeout = 2s;
  options.path_check_interval = 1s;
  return options;
}

std::shared_ptr<IscsiMultipathDevice> open_with(Lab& lab, const IscsiOptions& options) {
  return IscsiMultipathDevice::open(
      options, [&lab](boost::asio::io_context& io, size_t index, const std::string& portal,
                      const IscsiOptions&, const IscsiCredentials&, IscsiPath::Owner& owner) {
        lab.device_io = &io;
        auto path = std::make_unique<FakePath>(io, index, portal, owner, lab);
        lab.paths.push_back(path.get());
        return path;
      });
}

bool ready_within(std::future<std::error_code>& f, std::chrono::milliseconds limit) {
  return f.wait_for(limit) == std::future_status::ready;
}

}  // namespace

TEST(IscsiMultipathDevice, OpensWithTheLunSizeAndSendsToThePreferredPath) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  EXPECT_EQ(device->size(), 2048u * 512);
  EXPECT_EQ(device->capabilities().min_block_size, 512u);
  Client client;
  auto done = client.write(*device, 4096);
  ASSERT_TRUE(lab.wait_for("submit 0"));
  EXPECT_EQ(lab.count("submit 1"), 0u);
  EXPECT_FALSE(ready_within(done, 50ms));  // held by the path until it answers
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}

TEST(IscsiMultipathDevice, ARequestOnAFailedPathIsResentOnlyAfterItsSessionIsFenced) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  Client client;
  auto done = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 0"));
  const uint64_t dead_key = lab.keys[0];
  ASSERT_NE(dead_key, 0u);
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up[0] = false;
  }
  lab.on_device([&] { lab.paths[0]->abandon("reset by the test"); });
  ASSERT_TRUE(lab.wait_for("submit 1"));
  // The other path preempted exactly the dead session's key, and did so first.
  long fence = lab.first("fence 1 " + std::to_string(dead_key));
  ASSERT_GE(fence, 0);
  EXPECT_LT(fence, lab.first("submit 1"));
  EXPECT_FALSE(ready_within(done, 20ms));
  lab.on_device([&] { lab.paths[1]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get()) << "the caller never sees the failover";
  EXPECT_EQ(lab.paths[0]->counters().failovers, 1u);
  // The metrics, read from this (another) thread: path 0 down after one failover.
  MetricsReport report;
  device->report_metrics(report, {{"export", "e"}});
  const std::string text = report.text();
  const std::string p0 = "{export=\"e\",path=\"0\",portal=\"" + two_portals().portals[0] + "\"}";
  const std::string p1 = "{export=\"e\",path=\"1\",portal=\"" + two_portals().portals[1] + "\"}";
  EXPECT_NE(text.find("volgate_iscsi_path_up" + p0 + " 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("volgate_iscsi_path_up" + p1 + " 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("volgate_iscsi_path_failovers_total" + p0 + " 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("volgate_iscsi_path_failbacks_total" + p0 + " 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("volgate_iscsi_path_seconds_since_success" + p1), std::string::npos) << text;
}

TEST(IscsiMultipathDevice, WithNoPathRequestsFailWithEioAfterNoPathTimeout) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up = {false, false};
  }
  lab.on_device([&] {
    lab.paths[0]->abandon("down");
    lab.paths[1]->abandon("down");
  });
  Client client;
  auto start = std::chrono::steady_clock::now();
  auto done = client.write(*device, 0);
  ASSERT_TRUE(ready_within(done, kPatience));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(done.get(), errno_code(EIO));
  EXPECT_GE(waited, 1900ms);  // not before no-path-timeout (2 s)...
  EXPECT_LT(waited, 10s);     // ...and not much later (the bound is for a loaded machine)
}

TEST(IscsiMultipathDevice, AWaitingRequestCompletesWhenAPathComesBackInTime) {
  Lab lab;
  auto options = two_portals();
  options.no_path_timeout = 60s;  // never reached: the request completes once path 1 is back
  auto device = open_with(lab, options);
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up = {false, false};
  }
  lab.on_device([&] {
    lab.paths[0]->abandon("down");
    lab.paths[1]->abandon("down");
  });
  Client client;
  auto done = client.write(*device, 0);
  EXPECT_FALSE(ready_within(done, 300ms));
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up[1] = true;
  }
  ASSERT_TRUE(lab.wait_for("submit 1", 1)) << "the path checker brings path 1 back";
  // Both dead sessions were fenced by the returning path before the request went out.
  EXPECT_EQ(lab.count("fence 1 "), 2u);
  EXPECT_LT(lab.first("fence 1 "), lab.first("submit 1"));
  lab.on_device([&] { lab.paths[1]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}

TEST(IscsiMultipathDevice, FailoverReturnsToThePreferredPathOnceItIsBack) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up[0] = false;
  }
  lab.on_device([&] { lab.paths[0]->abandon("down"); });
  Client client;
  auto first = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 1"));
  lab.on_device([&] { lab.paths[1]->complete_all(); });
  ASSERT_TRUE(ready_within(first, kPatience));
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up[0] = true;
  }
  ASSERT_TRUE(lab.wait_for("up 0", 2)) << "the path checker reconnects path 0";
  auto second = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 0"));
  EXPECT_EQ(lab.count("submit 1"), 1u);
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(second, kPatience));
  EXPECT_FALSE(second.get());
}

TEST(IscsiMultipathDevice, RoundRobinAlternatesBetweenHealthyPaths) {
  Lab lab;
  auto options = two_portals();
  options.path_policy = PathPolicy::round_robin;
  auto device = open_with(lab, options);
  Client client;
  std::vector<std::future<std::error_code>> writes;
  for (int i = 0; i < 10; ++i) writes.push_back(client.write(*device, 4096u * i));
  ASSERT_TRUE(lab.wait_for("submit ", 10));
  EXPECT_EQ(lab.count("submit 0"), 5u);
  EXPECT_EQ(lab.count("submit 1"), 5u);
  lab.on_device([&] {
    lab.paths[0]->complete_all();
    lab.paths[1]->complete_all();
  });
  for (auto& w : writes) {
    ASSERT_TRUE(ready_within(w, kPatience));
    EXPECT_FALSE(w.get());
  }
}

TEST(IscsiMultipathDevice, APortalShowingAnotherLunFailsTheOpen) {
  Lab lab;
  lab.identity[1] = "lun-b";
  try {
    open_with(lab, two_portals());
    FAIL() << "opened although portal b shows another LUN";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("portal b:3260 shows a different LUN"), std::string::npos)
        << e.what();
  }
}

TEST(IscsiMultipathDevice, NoReachablePortalFailsTheOpenNamingEach) {
  Lab lab;
  lab.comes_up = {false, false};
  try {
    open_with(lab, two_portals());
    FAIL() << "opened without a path";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("no path to"), std::string::npos) << what;
    EXPECT_NE(what.find("a:3260: unreachable"), std::string::npos) << what;
    EXPECT_NE(what.find("b:3260: unreachable"), std::string::npos) << what;
  }
}

TEST(IscsiMultipathDevice, APathThatComesBackShowingAnotherLunIsRefusedForGood) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  {
    std::lock_guard lock(lab.mutex);
    lab.identity[0] = "lun-b";  // the portal now leads to another LUN
  }
  lab.on_device([&] { lab.paths[0]->abandon("reset"); });
  ASSERT_TRUE(lab.wait_for("up 0", 2)) << "the path checker reconnects path 0";
  // The refusal happens in the same turn of the device's thread as "up 0"; this runs after it.
  IscsiPath::State state{};
  lab.on_device([&] { state = lab.paths[0]->state(); });
  EXPECT_EQ(state, IscsiPath::State::refused);
  Client client;
  auto done = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 1"));
  EXPECT_EQ(lab.count("submit 0"), 0u);
  lab.on_device([&] { lab.paths[1]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
  // Refused is final: the checker does not try it again. A round of the checker connects down
  // paths in order and then checks up ones, so once path 1 has been checked again, a round has
  // passed in which path 0 would have been connected.
  const size_t connects = lab.count("connect 0");
  ASSERT_TRUE(lab.wait_for("check 1", lab.count("check 1") + 1));
  EXPECT_EQ(lab.count("connect 0"), connects);
  EXPECT_EQ(lab.count("up 0"), 2u);
}

TEST(IscsiMultipathDevice, RoundRobinSkipsAPathThatIsDown) {
  Lab lab;
  auto options = two_portals();
  options.path_policy = PathPolicy::round_robin;
  auto device = open_with(lab, options);
  {
    std::lock_guard lock(lab.mutex);
    lab.comes_up[1] = false;
  }
  lab.on_device([&] { lab.paths[1]->abandon("down"); });
  Client client;
  std::vector<std::future<std::error_code>> writes;
  for (int i = 0; i < 6; ++i) writes.push_back(client.write(*device, 4096u * i));
  ASSERT_TRUE(lab.wait_for("submit 0", 6));
  EXPECT_EQ(lab.count("submit 1"), 0u);
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  for (auto& w : writes) {
    ASSERT_TRUE(ready_within(w, kPatience));
    EXPECT_FALSE(w.get());
  }
}

TEST(IscsiMultipathDevice, RequestsAboveTheTargetsMaximumTransferLengthAreSplit) {
  Lab lab;
  lab.max_transfer_blocks = 16;  // 8 KiB of 512-byte blocks
  auto device = open_with(lab, two_portals());
  Client client;
  auto done = client.write(*device, 4096, 20480);
  ASSERT_TRUE(lab.wait_for("submit 0", 3));
  // Every part was handed to the device's thread by the time the write call returned, and has
  // reached the path once the device's thread has run what was posted before this.
  client.sync();
  lab.on_device([] {});
  EXPECT_EQ(lab.count("submit 0"), 3u);
  EXPECT_EQ(lab.count("submit 0 4096+8192"), 1u);
  EXPECT_EQ(lab.count("submit 0 12288+8192"), 1u);
  EXPECT_EQ(lab.count("submit 0 20480+4096"), 1u);
  // The caller hears once, when the last part is done.
  EXPECT_FALSE(ready_within(done, 20ms));
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}

TEST(IscsiMultipathDevice, KeysOfAnEarlierRunOnThisHostArePreemptedBeforeAnyRequestOthersNever) {
  Lab lab;
  std::vector<uint64_t> this_run;
  {
    // Another export of the same LUN in this process: its keys are this run's, never leftovers.
    auto sibling = open_with(lab, two_portals());
    this_run = lab.keys;
  }
  ASSERT_NE(this_run[0], 0u);
  ASSERT_NE(this_run[0], this_run[1]);
  const uint64_t host = this_run[0] & 0xffffffff00000000;
  const uint64_t other_run = (this_run[0] & 0xffff0000) ^ 0x10000;
  // What a gateway killed on this host left: its run part differs from ours.
  const std::vector<uint64_t> earlier{host | other_run | 1, host | other_run | 2};
  // A gateway on another host (or with another initiator name) shares the LUN.
  auto elsewhere = two_portals();
  elsewhere.initiator_name = "iqn.2026-01.org.volgate:elsewhere";
  Lab other_lab;
  uint64_t foreign;
  {
    auto other = open_with(other_lab, elsewhere);
    foreign = other_lab.keys[0];
  }
  EXPECT_NE(foreign >> 32, host >> 32) << "another initiator's keys have another host part";
  {
    std::lock_guard lock(lab.mutex);
    lab.lun_keys.insert(lab.lun_keys.end(), earlier.begin(), earlier.end());
    lab.lun_keys.push_back(foreign);
    lab.log.clear();
  }
  lab.paths.clear();
  auto device = open_with(lab, two_portals());
  EXPECT_EQ(lab.keys[0] & 0xffffffff00000000, host) << "the host part is stable";
  for (uint64_t key : this_run) EXPECT_NE(lab.keys[0], key) << "two devices never share a key";
  Client client;
  auto done = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 0"));
  for (uint64_t key : earlier) {
    long fence = lab.first("fence 0 " + std::to_string(key));
    ASSERT_GE(fence, 0) << "key " << key << " of the earlier run was not preempted";
    EXPECT_LT(fence, lab.first("submit 0"));
  }
  EXPECT_EQ(lab.count("fence "), 2u) << "only the earlier run's keys";
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}

TEST(IscsiMultipathDevice, ARequestThatTakesDownEveryPathFailsAfterNoPathTimeout) {
  Lab lab;
  auto options = two_portals();
  options.no_path_timeout = 1s;
  options.path_check_interval = 1s;
  Client client;  // outlives the device, whose closing answers a request still going round
  auto device = open_with(lab, options);
  auto start = std::chrono::steady_clock::now();
  auto done = client.write(*device, 0);
  // Whichever path the request is on dies under it once the other path is up again (the
  // checker reconnects it), so the request never waits for a path: it only goes round them.
  while (!ready_within(done, 100ms) && std::chrono::steady_clock::now() - start < kPatience)
    lab.on_device([&] {
      for (size_t i = 0; i < 2; ++i)
        if (lab.paths[i]->holds_requests() && lab.paths[1 - i]->state() == IscsiPath::State::up)
          lab.paths[i]->abandon("hangs on this request");
    });
  ASSERT_TRUE(ready_within(done, 0ms)) << "the request went round the paths for 20 s";
  EXPECT_EQ(done.get(), errno_code(EIO));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);  // no-path-timeout is 1 s
}

TEST(IscsiMultipathDevice, ABusyAnswerIsSentAgainAfterAPauseOnTheSamePath) {
  Lab lab;
  Client client;
  auto device = open_with(lab, two_portals());
  auto done = client.write(*device, 0);
  ASSERT_TRUE(lab.wait_for("submit 0"));
  std::chrono::steady_clock::time_point busy_at;
  lab.on_device([&] {
    busy_at = std::chrono::steady_clock::now();
    lab.paths[0]->answer_busy_all();
  });
  ASSERT_TRUE(lab.wait_for("submit 0", 2));
  {
    std::lock_guard lock(lab.mutex);
    ASSERT_EQ(lab.submit_times.size(), 2u);
    EXPECT_GE(lab.submit_times[1] - busy_at, 3ms) << "sent again without a pause";
  }
  EXPECT_EQ(lab.count("submit 1"), 0u);  // a busy target is no path failure
  EXPECT_EQ(lab.count("down"), 0u);
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}

TEST(IscsiMultipathDevice, ATargetThatStaysBusyFailsTheRequestAfterNoPathTimeout) {
  Lab lab;
  auto options = two_portals();
  options.no_path_timeout = 1s;
  Client client;
  auto device = open_with(lab, options);
  auto start = std::chrono::steady_clock::now();
  auto done = client.write(*device, 0);
  while (!ready_within(done, 1ms) && std::chrono::steady_clock::now() - start < kPatience)
    lab.on_device([&] {
      for (auto* path : lab.paths) path->answer_busy_all();
    });
  ASSERT_TRUE(ready_within(done, 0ms)) << "a request answered BUSY for 20 s is still pending";
  EXPECT_EQ(done.get(), errno_code(EIO));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 1s);   // not before no-path-timeout (1 s)...
  EXPECT_LT(waited, 10s);  // ...and not much later (the bound is for a loaded machine)
  EXPECT_GT(lab.count("submit"), 10u);  // it kept trying, a pause apart
}

TEST(IscsiMultipathDevice, AForcedWriteCarriesFuaWhereTheTargetHonoursIt) {
  Lab lab;
  auto device = open_with(lab, two_portals());
  Client client;
  auto done = client.write(*device, 4096, 4096, /*fua=*/true);
  ASSERT_TRUE(lab.wait_for("submit 0 4096+4096 fua"));
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
  EXPECT_EQ(lab.count("submit"), 1u);  // no flush needed
}

TEST(IscsiMultipathDevice, AForcedWriteToATargetWithoutDpoFuaIsFollowedByAFlush) {
  Lab lab;
  lab.supports_fua = false;
  auto device = open_with(lab, two_portals());
  EXPECT_FALSE(device->capabilities().can_fua);  // the bit would be ignored: the front flushes
  DeviceFront front(*device);
  Client client;
  auto done = client.write(front, 4096, 4096, /*fua=*/true);
  ASSERT_TRUE(lab.wait_for("submit 0 4096+4096"));
  EXPECT_EQ(lab.count("submit 0 4096+4096 fua"), 0u);  // the bit would be ignored: not sent
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(lab.wait_for("submit 0 0+0 flush"));
  EXPECT_FALSE(ready_within(done, 50ms));  // not durable until the flush is answered
  lab.on_device([&] { lab.paths[0]->complete_all(); });
  ASSERT_TRUE(ready_within(done, kPatience));
  EXPECT_FALSE(done.get());
}
