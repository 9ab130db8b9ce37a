#pragma once
// An IscsiPath over libiscsi: one libiscsi context per session, its socket watched by Asio.
//
// Bring-up runs in named steps: login, TEST UNIT READY until the unit attentions are drained,
// the VPD 0x83 identifier, READ CAPACITY(16), the Block Limits and provisioning pages, the
// session's persistent-reservation key, and last MODE SENSE (for DPOFUA, once a registrant).
// libiscsi's own reconnect is off. A session that fails is abandoned with a reset (SO_LINGER 0),
// never a graceful close, so nothing queued in it is sent later by our kernel.
//
// Why reservations as well: a session that stalls (a frozen network or target process) can hold
// writes that reach the LUN after newer data for the same blocks went through another path, and
// resetting our end cannot recall bytes the far side already accepted. So every session
// registers its own key under a WRITE EXCLUSIVE - REGISTRANTS ONLY reservation, and the owner
// has a live path PREEMPT the key of a dead session before any request is retried: from then on
// the LUN refuses the dead session's writes with RESERVATION CONFLICT, whenever they arrive.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <unordered_set>

#include "backends/block_device.hpp"
#include "backends/iscsi_options.hpp"
#include "backends/iscsi_path.hpp"

struct iscsi_context;

namespace volgate::backends {

class LibiscsiPath final : public IscsiPath {
 public:
  LibiscsiPath(boost::asio::io_context& io, size_t index, std::string portal,
               const IscsiOptions& options, const IscsiCredentials& credentials, Owner& owner);
  ~LibiscsiPath() override;

  void connect(uint64_t reservation_key) override;
  void submit(IscsiIo* io) override;
  void fence(uint64_t key, std::function<void(bool)> done) override;
  void check() override;
  void enforce_timeouts(std::chrono::steady_clock::time_point now) override;
  void abandon(const std::string& why) override;
  void refuse(const std::string& why) override;
  void unregister(std::function<void()> done) override;

 private:
  enum class Step {
    login,
    test_unit_ready,
    identify,
    capacity,
    mode_sense,
    limits,
    provisioning,
    register_key,
    read_keys,
    read_reservation,
    reserve,
  };

  static void on_connected(iscsi_context* iscsi, int status, void* data, void* self);
  static void on_step(iscsi_context* iscsi, int status, void* data, void* self);
  static void on_io(iscsi_context* iscsi, int status, void* data, void* io);
  static void on_fence(iscsi_context* iscsi, int status, void* data, void* self);
  void send_fence(uint64_t key, std::function<void(bool)> done);
  static void on_check(iscsi_context* iscsi, int status, void* data, void* self);
  static void on_unregister(iscsi_context* iscsi, int status, void* data, void* self);

  void run_step(Step step);
  void step_finished(int status, scsi_task* task);
  void send(IscsiIo* io);
  void io_finished(IscsiIo* io, int status, scsi_task* task);
  // Failure found inside a libiscsi callback: the context cannot be destroyed from there.
  void fail_soon(const std::string& why);
  void close_session(State next, const std::string& reason);
  std::string error_text() const;

  // Keeps Asio waiting for what libiscsi wants (readable, writable) on its socket.
  void watch();
  void on_ready(uint64_t session, int revents, const boost::system::error_code& ec);
  int release_socket();

  boost::asio::io_context& io_;
  const IscsiOptions& options_;
  const IscsiCredentials credentials_;
  Owner& owner_;

  iscsi_context* ctx_ = nullptr;
  uint64_t session_ = 0;  // bumped per session, so stale callbacks and waits recognise themselves
  Step step_ = Step::login;
  // When this session's connect() began: login_timeout bounds the whole bring-up, not each step.
  std::chrono::steady_clock::time_point connecting_since_{};
  unsigned unit_attentions_ = 0;
  boost::asio::posix::stream_descriptor socket_;
  bool waiting_read_ = false;
  bool waiting_write_ = false;
  std::string failure_;  // the first failure seen in this session, reported as its cause

  std::vector<unsigned char> zero_block_;  // what WRITE SAME repeats
  std::unordered_set<IscsiIo*> in_flight_;
  std::function<void(bool)> fence_done_;
  uint64_t fence_key_ = 0;               // the key fence_done_ is for
  unsigned fence_unit_attentions_ = 0;   // unit attentions answered to it so far
  std::chrono::steady_clock::time_point fence_since_{};
  bool checking_capacity_ = false;
  std::chrono::steady_clock::time_point check_since_{};
  std::function<void()> unregister_done_;
};

}  // namespace volgate::backends
