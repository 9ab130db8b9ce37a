#pragma once
// One path to an iSCSI LUN: one portal, and on it one libiscsi session at a time.
//
// A path brings itself up in named steps (login, TEST UNIT READY until the unit attentions are
// drained, the VPD 0x83 identifier, READ CAPACITY(16), then its persistent-reservation key) and
// then carries requests. It never repairs itself: when anything goes wrong it abandons the
// session (the socket is reset, never closed gracefully, so nothing queued in it is sent later),
// tells its owner, and waits to be told to connect again. libiscsi's own reconnect is off.
//
// Why reservations: a session that stalls (a frozen network or target process) can hold writes
// that reach the LUN after newer data for the same blocks went through another path. Resetting
// our end cannot recall bytes the far side already accepted. So every session registers its own
// key under a WRITE EXCLUSIVE - REGISTRANTS ONLY reservation, and the owner has a live path
// PREEMPT the key of a dead session before any request is retried: from then on the LUN refuses
// the dead session's writes with RESERVATION CONFLICT, whenever they arrive.
//
// Everything here runs on the one thread that runs the io_context given to the constructor.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <system_error>
#include <unordered_set>

#include "backends/block_device.hpp"
#include "backends/iscsi_options.hpp"

#include <iscsi/scsi-lowlevel.h>

struct iscsi_context;

namespace volgate::backends {

class IscsiPath;

// One request on its way through the paths. The device owns it; a path holds it while it is in
// flight there.
struct IscsiIo {
  enum class Kind { read, write, flush };
  Kind kind = Kind::read;
  uint64_t offset = 0;
  std::byte* data = nullptr;
  uint64_t length = 0;
  bool fua = false;

  // On a path.
  IscsiPath* path = nullptr;
  scsi_task* task = nullptr;
  std::chrono::steady_clock::time_point sent_at{};
  unsigned unit_attentions = 0;  // retried on the same path, up to a bound
  scsi_iovec iov{};  // what libiscsi reads from or writes into: the caller's buffer
};

struct IscsiCredentials {
  const char* chap_user = nullptr;  // null: no CHAP
  const char* chap_secret = nullptr;
  const char* mutual_user = nullptr;  // null: one-way CHAP
  const char* mutual_secret = nullptr;
};

class IscsiPath {
 public:
  enum class State { down, checking, up, refused };

  class Owner {
   public:
    virtual void path_up(IscsiPath& path) = 0;
    // The session is gone. `fence_key` is the reservation key it registered (0 if none): until
    // a live path has preempted it, writes queued in the dead session could still land.
    virtual void path_down(IscsiPath& path, const std::string& why, uint64_t fence_key) = 0;
    // A request finished on this path: done, or failed for a reason another path would not fix.
    virtual void io_done(IscsiIo* io, std::error_code ec) = 0;
    // The path failed under a request; it must be sent again elsewhere.
    virtual void io_retry(IscsiIo* io) = 0;
    virtual void capacity_changed(IscsiPath& path) = 0;

   protected:
    ~Owner() = default;
  };

  struct Counters {
    uint64_t ios = 0;        // requests completed here
    uint64_t errors = 0;     // sessions lost
    uint64_t failovers = 0;  // requests moved off this path when it failed
  };

  IscsiPath(boost::asio::io_context& io, size_t index, std::string portal,
            const IscsiOptions& options, const IscsiCredentials& credentials, Owner& owner);
  ~IscsiPath();
  IscsiPath(const IscsiPath&) = delete;
  IscsiPath& operator=(const IscsiPath&) = delete;

  // Starts a new session that will register `reservation_key` (0: do not use reservations).
  void connect(uint64_t reservation_key);
  void submit(IscsiIo* io);
  // PREEMPTs a dead session's key; done(true) once the LUN no longer accepts its writes.
  void fence(uint64_t key, std::function<void(bool)> done);
  // READ CAPACITY on an idle-or-busy up path: proves it is alive and notices resizes.
  void check();
  // Abandons the session when a request, the bring-up or a check took too long.
  void enforce_timeouts(std::chrono::steady_clock::time_point now);
  void abandon(const std::string& why);
  // Abandons the session for good: it shows another LUN than the other paths.
  void refuse(const std::string& why);
  // Drops this session's reservation key (at shutdown); done() runs in any case.
  void unregister(std::function<void()> done);

  State state() const { return state_; }
  size_t index() const { return index_; }
  const std::string& portal() const { return portal_; }
  const std::string& identity() const { return identity_; }  // VPD 0x83 designators
  uint64_t blocks() const { return blocks_; }
  uint32_t block_size() const { return block_size_; }
  uint64_t reservation_key() const { return registered_ ? key_ : 0; }
  bool reservations_supported() const { return reservations_supported_; }
  size_t in_flight() const { return in_flight_.size(); }
  const Counters& counters() const { return counters_; }
  const std::string& last_error() const { return last_error_; }
  // Set on a failed login that retrying will not fix (CHAP refused, no such target or LUN).
  bool login_refused() const { return login_refused_; }

 private:
  enum class Step {
    login,
    test_unit_ready,
    identify,
    capacity,
    register_key,
    read_reservation,
    reserve,
  };

  static void on_connected(iscsi_context* iscsi, int status, void* data, void* self);
  static void on_step(iscsi_context* iscsi, int status, void* data, void* self);
  static void on_io(iscsi_context* iscsi, int status, void* data, void* io);
  static void on_fence(iscsi_context* iscsi, int status, void* data, void* self);
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
  const size_t index_;
  const std::string portal_;
  const IscsiOptions& options_;
  const IscsiCredentials credentials_;
  Owner& owner_;

  iscsi_context* ctx_ = nullptr;
  uint64_t session_ = 0;  // bumped per session, so stale callbacks and waits recognise themselves
  State state_ = State::down;
  Step step_ = Step::login;
  std::chrono::steady_clock::time_point step_since_{};
  unsigned unit_attentions_ = 0;
  boost::asio::posix::stream_descriptor socket_;
  bool waiting_read_ = false;
  bool waiting_write_ = false;

  std::string identity_;
  uint64_t blocks_ = 0;
  uint32_t block_size_ = 0;
  uint64_t key_ = 0;
  bool registered_ = false;
  bool reservations_supported_ = true;
  bool login_refused_ = false;
  std::string last_error_;
  std::string failure_;  // the first failure seen in this session, reported as its cause

  std::unordered_set<IscsiIo*> in_flight_;
  std::function<void(bool)> fence_done_;
  std::chrono::steady_clock::time_point fence_since_{};
  bool checking_capacity_ = false;
  std::chrono::steady_clock::time_point check_since_{};
  std::function<void()> unregister_done_;
  Counters counters_;
};

const char* to_string(IscsiPath::State state);

}  // namespace volgate::backends
