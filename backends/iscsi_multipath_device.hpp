#pragma once
// An iSCSI LUN reached through one or more portals, with the failover and failback that
// dm-multipath would otherwise provide, entirely in user space (libiscsi).
//
// All paths live on one private thread and io_context; callers' requests are handed over to it
// and their completions posted back to the caller's io_context. Requests go to the first
// healthy portal (failover) or to each in turn (round-robin). A request whose path fails or
// stops answering is sent again on another path, but only after the dead session's
// reservation key has been preempted, so its queued writes can never land on top of newer
// data (see libiscsi_path.hpp). With no path up, requests wait up to no-path-timeout and then
// fail with EIO; a path checker reconnects down paths every path-check-interval.
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backends/block_device.hpp"
#include "backends/iscsi_options.hpp"
#include "backends/iscsi_path.hpp"
#include "crypto/secure_bytes.hpp"

namespace volgate::backends {

class IscsiMultipathDevice final : public BlockDevice, private IscsiPath::Owner {
 public:
  // Makes the path for one portal; the default makes LibiscsiPaths.
  using PathFactory = std::function<std::unique_ptr<IscsiPath>(
      boost::asio::io_context& io, size_t index, const std::string& portal,
      const IscsiOptions& options, const IscsiCredentials& credentials, IscsiPath::Owner& owner)>;

  // Logs in on every portal (each first attempt bounded by login_timeout) and checks that they
  // all show the same LUN. Throws std::runtime_error naming the portal and the reason when no
  // path comes up or a portal shows another LUN; a portal that is merely unreachable is logged
  // and retried in the background.
  static std::shared_ptr<IscsiMultipathDevice> open(const IscsiOptions& options,
                                                    PathFactory make_path = {});
  ~IscsiMultipathDevice() override;

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  DeviceCapabilities capabilities() const override;
  std::string description() const override;

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override;
  // UNMAP and WRITE SAME(16) when the LUN's provisioning page (VPD 0xB2) offers them; otherwise
  // trim is not advertised (a hint, it succeeds doing nothing) and zeroes are written as data.
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  // A LUN does not tell allocation here: everything is data.
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;
  // The paths' thread: a session running there never hands a request to another thread.
  boost::asio::io_context* home_context() override { return &io_; }
  // Per path: up, failovers, failbacks, seconds since the last success.
  void report_metrics(MetricsReport& report, const MetricLabels& labels) const override;
  // See IscsiOptions::take_over.
  void handover_committed(bool successor) override;

 private:
  using Clock = std::chrono::steady_clock;
  using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

  struct Request : IscsiIo {
    Completion done;
    boost::asio::io_context* caller = nullptr;
    std::optional<WorkGuard> busy;  // the caller's io_context runs until the completion
    Clock::time_point waiting_since{};
    Clock::time_point submitted_at{};
  };

  struct PartWriter;

  IscsiMultipathDevice(const IscsiOptions& options, const PathFactory& make_path);
  void start();
  void stop();

  // Splits what exceeds the target's maximum transfer length into requests it accepts.
  // `limit`: the largest part in bytes (0: none); reads and writes use the transfer limit.
  void submit(IscsiIo::Kind kind, uint64_t offset, std::byte* data, uint64_t length, bool fua,
              Completion done, uint64_t limit = ~uint64_t{0}, bool deallocate = false);
  void submit_one(IscsiIo::Kind kind, uint64_t offset, std::byte* data, uint64_t length, bool fua,
                  bool deallocate, Completion done);
  void complete(Request* request, std::error_code ec);

  // The device's thread.
  void dispatch();
  void schedule_dispatch();
  IscsiPath* pick_path();
  void start_fence();
  void tick();
  void check_paths();
  void finish_start_when_settled();
  uint64_t next_reservation_key();
  void fence_earlier_runs(const IscsiPath& path);
  void adopt_transfer_limit(const IscsiPath& path);
  enum class Tone { news, trouble };  // info or warning
  void log_path(Tone tone, const IscsiPath& path, const char* event, const std::string& why = {}) const;
  bool any_path_up() const;

  void path_up(IscsiPath& path) override;
  void path_down(IscsiPath& path, const std::string& why, uint64_t fence_key) override;
  void io_done(IscsiIo* io, std::error_code ec) override;
  void io_retry(IscsiIo* io) override;
  void io_busy(IscsiIo* io) override;
  void capacity_changed(IscsiPath& path) override;

  const IscsiOptions options_;
  crypto::SecureBytes chap_secret_;    // NUL-terminated copies, for every new session
  crypto::SecureBytes mutual_secret_;
  IscsiCredentials credentials_;

  boost::asio::io_context io_;
  std::optional<WorkGuard> keep_running_;
  boost::asio::steady_timer tick_timer_;
  boost::asio::steady_timer check_timer_;
  boost::asio::steady_timer stop_timer_;
  boost::asio::steady_timer busy_timer_;
  std::vector<std::unique_ptr<IscsiPath>> paths_;

  std::atomic<uint64_t> size_{0};
  std::atomic<uint64_t> max_transfer_bytes_{0};  // 0: the target states no limit
  // Provisioning, fixed by the first path up (every path shows the same LUN).
  bool can_unmap_ = false;
  bool can_write_same_ = false;
  bool fua_native_ = false;  // WRITE(16) with FUA is honoured; otherwise FUA is write + flush
  uint64_t unmap_part_bytes_ = 0;
  uint64_t write_same_part_bytes_ = 0;
  uint32_t block_size_ = 512;  // fixed once the first path is up
  std::string identity_;       // the LUN's VPD 0x83 designators, fixed by the first path up

  // Touched on the device's thread only.
  std::deque<Request*> queue_;   // waiting for a path (or for a fence)
  std::vector<Request*> busy_;   // answered BUSY or TASK SET FULL: sent again after kBusyPause
  std::vector<uint64_t> fences_;  // keys of dead sessions not yet preempted
  bool fencing_ = false;
  // Taking over (IscsiOptions::take_over): keys of earlier runs, preempted once it commits.
  std::vector<uint64_t> fences_after_handover_;
  bool handover_committed_ = false;
  // Handed over: the successor preempts our keys; unregistering them would drop the
  // reservation it takes over.
  bool keep_registrations_ = false;
  bool dispatch_posted_ = false;
  size_t next_path_ = 0;  // round-robin
  std::vector<bool> reported_up_;  // per path: its coming up was logged
  // Per path, for the metrics: written on the paths' thread only, read by scrapes.
  struct PathMetrics {
    std::atomic<bool> up{false};
    std::atomic<uint64_t> failovers{0};
    std::atomic<uint64_t> failbacks{0};
    std::atomic<int64_t> last_success_ns{0};  // steady clock; 0: never
    bool lost = false;  // went down since it was last up (paths' thread only)
  };
  static void bump(std::atomic<uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void note_path_up(const IscsiPath& path);
  std::unique_ptr<PathMetrics[]> path_metrics_;
  std::vector<std::string> last_down_reason_;  // per path: the last failure logged
  std::vector<bool> announced_checking_;       // per path: "checking" logged in this outage
  // Reservation keys: this host and LUN (32 bits), this process's run (16), the session (16). A
  // restarted gateway recognises keys with its host part and another run as its own leftovers.
  uint64_t key_host_ = 0;
  uint64_t key_run_ = 0;
  bool starting_ = true;
  bool launching_ = false;  // the first connect() of every path is being started
  bool stopping_ = false;
  bool warned_no_reservations_ = false;
  std::string start_error_;
  bool start_settled_ = false;
  std::mutex start_mutex_;
  std::condition_variable start_settled_cv_;

  std::thread thread_;
};

}  // namespace volgate::backends
