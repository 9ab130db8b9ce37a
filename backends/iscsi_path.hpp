#pragma once
// One path to an iSCSI LUN, as IscsiMultipathDevice sees it: one portal, and on it one session
// at a time. LibiscsiPath is the real one; unit tests script their own to inject failures.
//
// A path brings itself up (login, unit attentions, the LUN's identifier, its capacity, a
// reservation key) and then carries requests. It never repairs itself: when anything goes
// wrong it abandons the session, tells its owner, and waits to be told to connect again.
// Everything runs on the one thread that runs the device's io_context.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

// libiscsi's header uses the fixed-width types without including their header.
#include <iscsi/scsi-lowlevel.h>

namespace volgate::backends {

class IscsiPath;

// One request on its way through the paths. The device owns it; a path holds it while it is in
// flight there.
struct IscsiIo {
  // unmap: UNMAP (trim); zero: WRITE SAME(16) of a zero block.
  enum class Kind { read, write, flush, unmap, zero };
  Kind kind = Kind::read;
  uint64_t offset = 0;
  std::byte* data = nullptr;
  uint64_t length = 0;
  bool fua = false;
  bool deallocate = false;  // zero: the blocks may be unmapped rather than written

  // On a path.
  IscsiPath* path = nullptr;
  scsi_task* task = nullptr;
  std::chrono::steady_clock::time_point sent_at{};
  unsigned unit_attentions = 0;  // retried on the same path, up to a bound
  scsi_iovec iov{};              // what libiscsi reads from or writes into: the caller's buffer
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
    // Never called from inside a libiscsi callback, so the owner may close sessions here.
    virtual void path_up(IscsiPath& path) = 0;
    // The session is gone. `fence_key` is the reservation key it registered (0 if none): until
    // a live path has preempted it, writes queued in the dead session could still land.
    virtual void path_down(IscsiPath& path, const std::string& why, uint64_t fence_key) = 0;
    // A request finished on this path: done, or failed for a reason another path would not fix.
    virtual void io_done(IscsiIo* io, std::error_code ec) = 0;
    // The path failed under a request; it must be sent again elsewhere.
    virtual void io_retry(IscsiIo* io) = 0;
    // The target is alive but cannot take the request now (BUSY, TASK SET FULL): it must be
    // sent again after a pause rather than at once, which would only add to the target's load.
    virtual void io_busy(IscsiIo* io) = 0;
    virtual void capacity_changed(IscsiPath& path) = 0;

   protected:
    ~Owner() = default;
  };

  struct Counters {
    uint64_t ios = 0;        // requests completed here
    uint64_t errors = 0;     // sessions lost
    uint64_t failovers = 0;  // requests moved off this path when it failed
  };

  IscsiPath(size_t index, std::string portal) : index_(index), portal_(std::move(portal)) {}
  virtual ~IscsiPath() = default;
  IscsiPath(const IscsiPath&) = delete;
  IscsiPath& operator=(const IscsiPath&) = delete;

  // Starts a new session that will register `reservation_key` (0: do not use reservations).
  virtual void connect(uint64_t reservation_key) = 0;
  virtual void submit(IscsiIo* io) = 0;
  // PREEMPTs a dead session's key; done(true) once the LUN no longer accepts its writes.
  virtual void fence(uint64_t key, std::function<void(bool)> done) = 0;
  // READ CAPACITY on an up path: proves it is alive and notices resizes.
  virtual void check() = 0;
  // Abandons the session when a request, the bring-up or a check took too long.
  virtual void enforce_timeouts(std::chrono::steady_clock::time_point now) = 0;
  virtual void abandon(const std::string& why) = 0;
  // Abandons the session for good: it shows another LUN than the other paths.
  virtual void refuse(const std::string& why) = 0;
  // Drops this session's reservation key (at shutdown); done() runs in any case.
  virtual void unregister(std::function<void()> done) = 0;

  State state() const { return state_; }
  size_t index() const { return index_; }
  const std::string& portal() const { return portal_; }
  const std::string& identity() const { return identity_; }  // VPD 0x83 designators
  uint64_t blocks() const { return blocks_; }
  uint32_t block_size() const { return block_size_; }
  // The target's MAXIMUM TRANSFER LENGTH (VPD 0xB0) in blocks; 0 when it states no limit.
  uint32_t max_transfer_blocks() const { return max_transfer_blocks_; }
  // Every key registered on the LUN when this session came up (READ KEYS), ours included.
  const std::vector<uint64_t>& registered_keys() const { return registered_keys_; }
  // Logical block provisioning (VPD 0xB2, limits from 0xB0): what the target says it can do.
  bool can_unmap() const { return can_unmap_; }
  bool can_write_same() const { return can_write_same_; }
  bool unmapped_reads_zero() const { return unmapped_reads_zero_; }
  // MODE SENSE's DPOFUA bit: WRITE(16) honours FUA. Without it a forced write needs a flush.
  bool supports_fua() const { return supports_fua_; }
  uint32_t max_unmap_blocks() const { return max_unmap_blocks_; }          // 0: no limit stated
  uint64_t max_write_same_blocks() const { return max_write_same_blocks_; }  // 0: no limit stated
  uint64_t reservation_key() const { return registered_ ? key_ : 0; }
  bool reservations_supported() const { return reservations_supported_; }
  const Counters& counters() const { return counters_; }
  const std::string& last_error() const { return last_error_; }

 protected:
  const size_t index_;
  const std::string portal_;
  State state_ = State::down;
  std::string identity_;
  uint64_t blocks_ = 0;
  uint32_t block_size_ = 0;
  uint32_t max_transfer_blocks_ = 0;
  std::vector<uint64_t> registered_keys_;
  bool can_unmap_ = false;
  bool can_write_same_ = false;
  bool unmapped_reads_zero_ = false;
  bool supports_fua_ = false;
  uint32_t max_unmap_blocks_ = 0;
  uint64_t max_write_same_blocks_ = 0;
  uint64_t key_ = 0;
  bool registered_ = false;
  bool reservations_supported_ = true;
  std::string last_error_;
  Counters counters_;
};

const char* to_string(IscsiPath::State state);

}  // namespace volgate::backends
