#pragma once
// Another NBD server's export as a device, through libnbd's asynchronous API: re-export it with
// volgate's encryption on top, or just with its own reconnection.
//
// All upstream connections live on one private thread and io_context, as iSCSI paths do
// (home_context: NBD sessions on this device move there, so a request never changes thread).
// libnbd is asked for its socket and the direction it waits in; Asio waits on that descriptor
// and tells libnbd when it is readable or writable, so there is no thread per request and no
// blocking call, the handshake included (bounded by connect-timeout). The one call that can
// block, resolving nbd://HOST's name (getaddrinfo, which libnbd would make on this thread and
// which waits as long as the DNS server takes), runs on a thread of its own, at most one per
// connection; the attempt's connect-timeout bounds the wait for it, and a device that stops does
// not wait for it at all. libnbd then gets the addresses one by one, as it tries them itself.
//
// A lost connection is re-established in the background. With reconnect-delay, the requests
// it had in flight, and those arriving meanwhile, wait for it up to that long and are sent
// again (as QEMU's NBD client does); without, they fail with EIO at once. Requests larger than
// the upstream's maximum block size are split; capabilities are the upstream's (what it lacks,
// such as zeroes or FUA, the device front does with writes and flushes).
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backends/block_device.hpp"
#include "backends/nbd_options.hpp"

namespace volgate::backends {

class NbdDevice final : public BlockDevice {
 public:
  // Connects (every connection within connect-timeout) and reads the upstream's size and
  // capabilities. Throws std::runtime_error with one line naming the upstream and the reason
  // (unreachable, no such export, TLS required, handshake timed out).
  static std::shared_ptr<NbdDevice> open(const NbdOptions& options);
  ~NbdDevice() override;

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  DeviceCapabilities capabilities() const override { return caps_; }
  std::string description() const override { return "nbd " + options_.uri; }

  void read(uint64_t offset, std::span<std::byte> data, Completion done) override;
  void write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
             Completion done) override;
  void flush(Completion done) override;
  void trim(uint64_t offset, uint64_t length, Completion done) override;
  void write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) override;
  // base:allocation when the upstream offers it; otherwise everything is data.
  void block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) override;
  void cache(uint64_t offset, uint64_t length, Completion done) override;
  boost::asio::io_context* home_context() override { return &io_; }

  // Test hook: connections currently up.
  size_t connections_up() const { return up_.load(std::memory_order_relaxed); }

  struct Address;  // one address nbd://HOST resolved to (the .cpp's)

 private:
  using Clock = std::chrono::steady_clock;
  using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  struct Connection;
  struct Request;
  struct Part;
  enum class Kind { read, write, flush, trim, zero, block_status, cache };

  explicit NbdDevice(const NbdOptions& options);
  void start(size_t connections);  // the caller's thread: waits for the first connections
  void stop();

  // Any thread: hands a request to the device's thread.
  void submit(Request* request);
  Request* new_request(Kind kind, uint64_t offset, uint64_t length);

  // The device's thread.
  void begin(Request* request);
  void issue(Part* part);
  void part_done(Part* part, int error);
  void finish(Request* request);
  void fail_waiting(std::error_code ec);
  // Acts on everything libnbd reported and keeps each connection's state machine moving until
  // it waits for its socket; then arms the waits.
  void settle();
  void connect(Connection& connection);
  void arm_deadline(Connection& connection);
  void resolve(Connection& connection);
  void resolved(Connection& connection, std::vector<Address> addresses, const std::string& error);
  // Starts libnbd's connection and handshake: to `address` (nbd://) or to the URI (nbd+unix://).
  void open_handle(Connection& connection, const Address* address);
  bool pump(Connection& connection);  // one step; false when it waits for the socket
  void arm(Connection& connection);
  void connection_up(Connection& connection);
  void connection_lost(Connection& connection, const std::string& why);
  // Ends the attempt; with `try_next`, an nbd:// attempt goes on with the name's next address.
  void connect_failed(Connection& connection, const std::string& why, bool try_next = true);
  void schedule_reconnect(Connection& connection);
  Connection* pick_connection();
  void read_upstream_facts(Connection& connection);
  void reconnected(Connection& connection);
  Part* new_part(Request* request, uint64_t offset, uint64_t length);
  void free_part(Part* part);

  const NbdOptions options_;
  boost::asio::io_context io_;
  std::optional<WorkGuard> keep_running_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::atomic<uint64_t> size_{0};
  std::atomic<size_t> up_{0};
  DeviceCapabilities caps_;
  uint64_t max_io_bytes_ = 32u << 20;  // reads and writes are split at this
  bool upstream_zero_ = false;

  // The device's thread only.
  std::vector<std::pair<Part*, int>> finished_;  // filled by libnbd's callbacks
  std::deque<Part*> waiting_;   // for a connection to come (back)
  std::vector<std::unique_ptr<Part>> free_parts_;
  bool settling_ = false;
  bool failing_fast_ = false;   // no connection, and the reconnect delay is over (or zero)
  Clock::time_point lost_since_{};
  boost::asio::steady_timer give_up_timer_;
  size_t next_connection_ = 0;
  bool stopping_ = false;

  // Start-up, between the caller's thread and the device's.
  std::mutex start_mutex_;
  std::condition_variable start_cv_;
  size_t start_pending_ = 0;
  std::string start_error_;

  // Where name resolutions send their answers: null once the device stopped (they run on
  // detached threads, which may outlive it).
  struct ResolverLink {
    std::mutex mutex;
    NbdDevice* device = nullptr;
  };
  const std::shared_ptr<ResolverLink> resolver_link_ = std::make_shared<ResolverLink>();

  std::thread thread_;
};

}  // namespace volgate::backends
