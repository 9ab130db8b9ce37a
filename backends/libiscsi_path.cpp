#include "backends/libiscsi_path.hpp"

#include <iscsi/iscsi.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <cstdio>
#include <random>
#include <utility>

namespace volgate::backends {
namespace {

using Clock = std::chrono::steady_clock;

// A unit attention is reported once per nexus and event (login, reset, resize, a reservation
// change); more than a handful in a row on one request means something keeps resetting the LUN.
constexpr unsigned kMaxUnitAttentions = 8;
constexpr int kVpdDeviceIdentification = 0x83;
constexpr int kVpdBlockLimits = 0xb0;
constexpr int kVpdLogicalBlockProvisioning = 0xb2;
constexpr int kVpdMaxLength = 255;
constexpr unsigned char kModeSenseLength = 255;
// In a direct-access device's mode parameter header: DPO and FUA are supported (SBC).
constexpr uint8_t kDpoFuaBit = 0x10;
constexpr uint16_t kReadReservationLength = 24;
// The header and up to 255 keys: far more sessions than any LUN here will see.
constexpr uint16_t kReadKeysLength = 8 + 8 * 255;

const char* step_name(int step) {
  static const char* const names[] = {"login",    "TEST UNIT READY", "INQUIRY VPD 0x83",
                                      "READ CAPACITY(16)", "MODE SENSE(6)", "INQUIRY VPD 0xB0",
                                      "INQUIRY VPD 0xB2",
                                      "PERSISTENT RESERVE OUT REGISTER",
                                      "PERSISTENT RESERVE IN READ KEYS",
                                      "PERSISTENT RESERVE IN READ RESERVATION",
                                      "PERSISTENT RESERVE OUT RESERVE"};
  return names[step];
}

std::string sense_text(const scsi_task* task) {
  char text[96];
  std::snprintf(text, sizeof text, "%s (sense key 0x%x, ASC/ASCQ 0x%04x)",
                scsi_sense_key_str(task->sense.key), static_cast<unsigned>(task->sense.key),
                static_cast<unsigned>(task->sense.ascq));
  return text;
}

std::string status_text(int status, const scsi_task* task) {
  switch (status) {
    case SCSI_STATUS_CHECK_CONDITION:
      return task ? sense_text(task) : "CHECK CONDITION";
    case SCSI_STATUS_RESERVATION_CONFLICT:
      return "RESERVATION CONFLICT";
    case SCSI_STATUS_BUSY:
      return "BUSY";
    case SCSI_STATUS_TASK_SET_FULL:
      return "TASK SET FULL";
    case SCSI_STATUS_TASK_ABORTED:
      return "TASK ABORTED";
    case SCSI_STATUS_CANCELLED:
      return "the session was lost";
    case SCSI_STATUS_TIMEOUT:
      return "timed out";
    default:
      return "transport error";
  }
}

// With its reconnect turned off, libiscsi words a closed or reset connection as a failed
// reconnect attempt ("Can not reconnect right now"): say what happened instead.
std::string lost_connection(const std::string& error) {
  if (error.find("reconnect") != std::string::npos) return "the connection was closed or reset";
  return "connection lost: " + error;
}

// The logical unit's own designators from VPD page 0x83 (NAA, EUI-64, T10 vendor id...), which
// every portal of the same LUN reports identically.
std::string lun_identity(scsi_task* task) {
  auto* page = static_cast<scsi_inquiry_device_identification*>(scsi_datain_unmarshall(task));
  if (!page) return {};
  std::string identity;
  for (auto* d = page->designators; d; d = d->next) {
    if (d->association != SCSI_ASSOCIATION_LOGICAL_UNIT) continue;
    char head[16];
    std::snprintf(head, sizeof head, "%s%x:", identity.empty() ? "" : ",",
                  static_cast<unsigned>(d->designator_type));
    identity += head;
    for (int i = 0; i < d->designator_length; ++i) {
      char hex[3];
      std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(d->designator[i]));
      identity += hex;
    }
  }
  return identity;
}

}  // namespace

LibiscsiPath::LibiscsiPath(boost::asio::io_context& io, size_t index, std::string portal,
                     const IscsiOptions& options, const IscsiCredentials& credentials, Owner& owner)
    : IscsiPath(index, std::move(portal)),
      io_(io),
      options_(options),
      credentials_(credentials),
      owner_(owner),
      socket_(io) {}

LibiscsiPath::~LibiscsiPath() {
  release_socket();
  if (ctx_) {
    iscsi_context* ctx = std::exchange(ctx_, nullptr);
    iscsi_destroy_context(ctx);
  }
}

std::string LibiscsiPath::error_text() const {
  const char* text = ctx_ ? iscsi_get_error(ctx_) : nullptr;
  std::string s = text && *text ? text : "unknown error";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '.')) s.pop_back();
  return s;
}

void LibiscsiPath::connect(uint64_t reservation_key) {
  if (state_ == State::refused || ctx_) return;
  ctx_ = iscsi_create_context(options_.initiator_name.c_str());
  if (!ctx_) {
    last_error_ = "cannot create an iSCSI context";
    return;
  }
  ++session_;
  failure_.clear();
  key_ = reservation_key;
  registered_ = false;
  unit_attentions_ = 0;
  // libiscsi seeds the ISID from an unseeded rand(): every process would present the same one,
  // and a target takes a second session with the same initiator name and ISID as a
  // reinstatement of the first. Each session gets its own.
  std::random_device random;
  iscsi_set_isid_random(ctx_, random(), static_cast<uint32_t>(index_));
  iscsi_set_targetname(ctx_, options_.target.c_str());
  iscsi_set_session_type(ctx_, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(ctx_, ISCSI_HEADER_DIGEST_NONE_CRC32C);
  if (credentials_.chap_user)
    iscsi_set_initiator_username_pwd(ctx_, credentials_.chap_user, credentials_.chap_secret);
  if (credentials_.mutual_user)
    iscsi_set_target_username_pwd(ctx_, credentials_.mutual_user, credentials_.mutual_secret);
  // Failover is ours: libiscsi would otherwise retry the same portal forever.
  iscsi_set_noautoreconnect(ctx_, 1);
  // Bounds how long the kernel keeps retransmitting what a dead peer never acknowledged.
  iscsi_set_tcp_user_timeout(ctx_, static_cast<int>(options_.io_timeout.count()));
  iscsi_set_timeout(ctx_, 0);  // timeouts are enforced here, in milliseconds
  state_ = State::checking;
  step_ = Step::login;
  connecting_since_ = Clock::now();
  if (iscsi_full_connect_async(ctx_, portal_.c_str(), options_.lun, on_connected, this) != 0)
    return close_session(State::down, "cannot connect: " + error_text());
  watch();
}

void LibiscsiPath::on_connected(iscsi_context* iscsi, int status, void*, void* self) {
  auto* path = static_cast<LibiscsiPath*>(self);
  if (iscsi != path->ctx_) return;
  if (path->state_ != State::checking || path->step_ != Step::login) {
    // The second call libiscsi makes: the connection is gone.
    if (status != SCSI_STATUS_GOOD) path->fail_soon(lost_connection(path->error_text()));
    return;
  }
  if (status != SCSI_STATUS_GOOD) {
    return path->fail_soon("login failed: " + path->error_text());
  }
  path->run_step(Step::test_unit_ready);
}

void LibiscsiPath::run_step(Step step) {
  step_ = step;
  scsi_task* task = nullptr;
  const int lun = options_.lun;
  scsi_persistent_reserve_out_basic params{};
  switch (step) {
    case Step::login:
      return;
    case Step::test_unit_ready:
      task = iscsi_testunitready_task(ctx_, lun, on_step, this);
      break;
    case Step::identify:
      task = iscsi_inquiry_task(ctx_, lun, 1, kVpdDeviceIdentification, kVpdMaxLength, on_step, this);
      break;
    case Step::capacity:
      task = iscsi_readcapacity16_task(ctx_, lun, on_step, this);
      break;
    case Step::mode_sense:
      // The header alone carries DPOFUA; the caching page is asked for as the smallest one.
      task = iscsi_modesense6_task(ctx_, lun, 1, SCSI_MODESENSE_PC_CURRENT, SCSI_MODEPAGE_CACHING, 0,
                                   kModeSenseLength, on_step, this);
      break;
    case Step::limits:
      task = iscsi_inquiry_task(ctx_, lun, 1, kVpdBlockLimits, kVpdMaxLength, on_step, this);
      break;
    case Step::provisioning:
      task = iscsi_inquiry_task(ctx_, lun, 1, kVpdLogicalBlockProvisioning, kVpdMaxLength, on_step,
                                this);
      break;
    case Step::register_key:
      params.service_action_reservation_key = key_;
      task = iscsi_persistent_reserve_out_task(
          ctx_, lun, SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY,
          SCSI_PERSISTENT_RESERVE_SCOPE_LU, 0, &params, on_step, this);
      break;
    case Step::read_keys:
      task = iscsi_persistent_reserve_in_task(ctx_, lun, SCSI_PERSISTENT_RESERVE_READ_KEYS,
                                              kReadKeysLength, on_step, this);
      break;
    case Step::read_reservation:
      task = iscsi_persistent_reserve_in_task(ctx_, lun, SCSI_PERSISTENT_RESERVE_READ_RESERVATION,
                                              kReadReservationLength, on_step, this);
      break;
    case Step::reserve:
      params.reservation_key = key_;
      task = iscsi_persistent_reserve_out_task(
          ctx_, lun, SCSI_PERSISTENT_RESERVE_RESERVE, SCSI_PERSISTENT_RESERVE_SCOPE_LU,
          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY, &params, on_step, this);
      break;
  }
  if (!task) return fail_soon(std::string("cannot send ") + step_name(static_cast<int>(step)) +
                              ": " + error_text());
  watch();
}

void LibiscsiPath::on_step(iscsi_context* iscsi, int status, void* data, void* self) {
  auto* task = static_cast<scsi_task*>(data);
  auto* path = static_cast<LibiscsiPath*>(self);
  if (iscsi == path->ctx_ && path->state_ == State::checking) path->step_finished(status, task);
  if (task) scsi_free_scsi_task(task);
}

void LibiscsiPath::step_finished(int status, scsi_task* task) {
  auto failed = [&] {
    fail_soon(std::string(step_name(static_cast<int>(step_))) + " failed: " +
              status_text(status, task));
  };
  const bool good = status == SCSI_STATUS_GOOD && task;
  const bool illegal_request = status == SCSI_STATUS_CHECK_CONDITION && task &&
                               task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST;
  switch (step_) {
    case Step::login:
      return;
    case Step::test_unit_ready:
      // After a login the target reports what happened since this initiator last saw the LUN
      // (power on, reset, resize) as unit attentions; each is reported once, then cleared.
      if (status == SCSI_STATUS_CHECK_CONDITION && task &&
          task->sense.key == SCSI_SENSE_UNIT_ATTENTION && ++unit_attentions_ < kMaxUnitAttentions)
        return run_step(Step::test_unit_ready);
      if (!good) return failed();
      return run_step(Step::identify);
    case Step::identify:
      if (!good) return failed();
      identity_ = lun_identity(task);
      if (identity_.empty()) return fail_soon("the LUN reports no identifier in VPD page 0x83");
      return run_step(Step::capacity);
    case Step::capacity: {
      if (!good) return failed();
      auto* capacity = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
      if (!capacity || capacity->block_length == 0) return fail_soon("READ CAPACITY(16) returned no block size");
      blocks_ = capacity->returned_lba + 1;
      block_size_ = capacity->block_length;
      return run_step(Step::limits);
    }
    case Step::limits: {
      // A target without the Block Limits page states no limits, and no provisioning either.
      max_transfer_blocks_ = max_unmap_blocks_ = 0;
      max_write_same_blocks_ = 0;
      can_unmap_ = can_write_same_ = unmapped_reads_zero_ = false;
      if (good) {
        auto* limits = static_cast<scsi_inquiry_block_limits*>(scsi_datain_unmarshall(task));
        if (limits) {
          max_transfer_blocks_ = limits->max_xfer_len;
          max_unmap_blocks_ = limits->max_unmap;
          max_write_same_blocks_ = limits->max_ws_len;
          return run_step(Step::provisioning);
        }
      } else if (!illegal_request) {
        return failed();
      }
      registered_keys_.clear();
      if (options_.read_only || key_ == 0 || !reservations_supported_) return run_step(Step::mode_sense);
      return run_step(Step::register_key);
    }
    case Step::provisioning: {
      if (good) {
        auto* page =
            static_cast<scsi_inquiry_logical_block_provisioning*>(scsi_datain_unmarshall(task));
        if (page) {
          // UNMAP needs room for at least one block in a request.
          can_unmap_ = page->lbpu && max_unmap_blocks_ != 0;
          can_write_same_ = page->lbpws;
          unmapped_reads_zero_ = page->lbprz;
        }
      } else if (!illegal_request) {
        return failed();
      }
      zero_block_.assign(block_size_, 0);
      registered_keys_.clear();
      if (options_.read_only || key_ == 0 || !reservations_supported_) return run_step(Step::mode_sense);
      return run_step(Step::register_key);
    }
    case Step::register_key:
      if (illegal_request) {
        reservations_supported_ = false;  // the owner warns: no fencing on this LUN
        return run_step(Step::mode_sense);
      }
      if (!good) return failed();
      registered_ = true;
      return run_step(Step::read_keys);
    case Step::read_keys: {
      if (!good) return failed();
      auto* keys = static_cast<scsi_persistent_reserve_in_read_keys*>(scsi_datain_unmarshall(task));
      if (!keys) return fail_soon("cannot parse the READ KEYS answer");
      registered_keys_.assign(keys->keys, keys->keys + keys->num_keys);
      return run_step(Step::read_reservation);
    }
    case Step::read_reservation: {
      if (!good) return failed();
      auto* reservation =
          static_cast<scsi_persistent_reserve_in_read_reservation*>(scsi_datain_unmarshall(task));
      if (!reservation) return fail_soon("cannot parse the READ RESERVATION answer");
      if (!reservation->reserved) return run_step(Step::reserve);
      if (reservation->pr_type != SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY) {
        char why[96];
        std::snprintf(why, sizeof why, "the LUN holds another initiator's reservation (type %u)",
                      static_cast<unsigned>(reservation->pr_type));
        return fail_soon(why);
      }
      // Another path (or gateway) reserved it; as a registrant we may write.
      return run_step(Step::mode_sense);
    }
    case Step::reserve:
      // A conflict means another registrant reserved it first, which is just as good.
      if (!good && status != SCSI_STATUS_RESERVATION_CONFLICT) return failed();
      return run_step(Step::mode_sense);
    case Step::mode_sense: {
      // Last, once this session is a registrant: tgtd refuses MODE SENSE (RESERVATION
      // CONFLICT) to a session that is not while another holds the reservation, which made the
      // second export of a LUN, or a gateway restarted over its own leftover keys, take the
      // target for one without DPOFUA. A target that still does not answer is taken not to
      // honour FUA: forced writes then get a flush, which is always correct.
      supports_fua_ = false;
      if (good) {
        auto* sense = static_cast<scsi_mode_sense*>(scsi_datain_unmarshall(task));
        supports_fua_ = sense && (sense->device_specific_parameter & kDpoFuaBit);
      } else if (status != SCSI_STATUS_CHECK_CONDITION && status != SCSI_STATUS_RESERVATION_CONFLICT) {
        return failed();
      }
      break;
    }
  }
  state_ = State::up;
  // Not from inside libiscsi: the owner may refuse this path, which destroys the context.
  boost::asio::post(io_, [this, session = session_] {
    if (session == session_ && state_ == State::up) owner_.path_up(*this);
  });
}

void LibiscsiPath::submit(IscsiIo* io) {
  io->unit_attentions = 0;
  send(io);
}

void LibiscsiPath::send(IscsiIo* io) {
  io->path = this;
  io->sent_at = Clock::now();
  const uint64_t lba = io->offset / block_size_;
  const auto length = static_cast<uint32_t>(io->length);
  const int block_size = static_cast<int>(block_size_);
  io->iov = {io->data, io->length};
  scsi_task* task = nullptr;
  switch (io->kind) {
    case IscsiIo::Kind::read:
      task = iscsi_read16_iov_task(ctx_, options_.lun, lba, length, block_size, 0, 0, 0, 0, 0,
                                   on_io, io, &io->iov, 1);
      break;
    case IscsiIo::Kind::write:
      task = iscsi_write16_iov_task(ctx_, options_.lun, lba, nullptr, length, block_size, 0, 0,
                                    io->fua ? 1 : 0, 0, 0, on_io, io, &io->iov, 1);
      break;
    case IscsiIo::Kind::flush:
      task = iscsi_synchronizecache16_task(ctx_, options_.lun, 0, 0, 0, 0, on_io, io);
      break;
    case IscsiIo::Kind::unmap: {
      unmap_list range{lba, static_cast<uint32_t>(io->length / block_size_)};
      task = iscsi_unmap_task(ctx_, options_.lun, 0, 0, &range, 1, on_io, io);
      break;
    }
    case IscsiIo::Kind::zero:
      // Deallocating is only allowed when unmapped blocks are sure to read as zeroes.
      task = iscsi_writesame16_task(ctx_, options_.lun, lba, zero_block_.data(), block_size_,
                                    static_cast<uint32_t>(io->length / block_size_), 0,
                                    unmapped_reads_zero_ && io->deallocate ? 1 : 0, 0, 0, on_io, io);
      break;
  }
  if (!task) {
    ++counters_.failovers;
    fail_soon("cannot queue a request: " + error_text());
    return owner_.io_retry(io);
  }
  io->task = task;
  in_flight_.insert(io);
  watch();
}

void LibiscsiPath::on_io(iscsi_context* iscsi, int status, void* data, void* io_pointer) {
  auto* io = static_cast<IscsiIo*>(io_pointer);
  auto* task = static_cast<scsi_task*>(data);
  auto* path = static_cast<LibiscsiPath*>(io->path);
  if (!path || io->task != task) {  // cannot happen: one callback per task
    if (task) scsi_free_scsi_task(task);
    return;
  }
  path->io_finished(io, iscsi == path->ctx_ ? status : SCSI_STATUS_CANCELLED, task);
}

void LibiscsiPath::io_finished(IscsiIo* io, int status, scsi_task* task) {
  in_flight_.erase(io);
  io->task = nullptr;
  std::string why = status_text(status, task);
  const int sense_key = status == SCSI_STATUS_CHECK_CONDITION ? task->sense.key : -1;
  const int ascq = status == SCSI_STATUS_CHECK_CONDITION ? task->sense.ascq : 0;
  scsi_free_scsi_task(task);

  if (status == SCSI_STATUS_GOOD) {
    ++counters_.ios;
    return owner_.io_done(io, {});
  }
  if (sense_key == SCSI_SENSE_UNIT_ATTENTION) {
    if (ascq == SCSI_SENSE_ASCQ_CAPACITY_DATA_HAS_CHANGED) check();
    if (++io->unit_attentions <= kMaxUnitAttentions && state_ == State::up) return send(io);
    return owner_.io_done(io, errno_code(EIO));
  }
  switch (sense_key) {
    case SCSI_SENSE_ILLEGAL_REQUEST:
      return owner_.io_done(io, errno_code(EINVAL));
    case SCSI_SENSE_DATA_PROTECTION:
      return owner_.io_done(io, errno_code(EPERM));
    case SCSI_SENSE_MEDIUM_ERROR:
    case SCSI_SENSE_HARDWARE_ERROR:
    case SCSI_SENSE_BLANK_CHECK:
    case SCSI_SENSE_MISCOMPARE:
      return owner_.io_done(io, errno_code(EIO));
    default:
      break;
  }
  if ((status == SCSI_STATUS_BUSY || status == SCSI_STATUS_TASK_SET_FULL) && state_ == State::up)
    return owner_.io_busy(io);  // the target is alive, just full: again after a pause
  // Anything else (session lost, timed out, not ready, our registration gone) is the path's
  // failure, not the request's.
  ++counters_.failovers;
  if (state_ == State::up) fail_soon(why);
  owner_.io_retry(io);
}

void LibiscsiPath::fence(uint64_t key, std::function<void(bool)> done) {
  fence_unit_attentions_ = 0;
  send_fence(key, std::move(done));
}

void LibiscsiPath::send_fence(uint64_t key, std::function<void(bool)> done) {
  fence_key_ = key;
  scsi_persistent_reserve_out_basic params{};
  params.reservation_key = key_;
  params.service_action_reservation_key = key;
  scsi_task* task =
      state_ == State::up
          ? iscsi_persistent_reserve_out_task(
                ctx_, options_.lun, SCSI_PERSISTENT_RESERVE_PREEMPT, SCSI_PERSISTENT_RESERVE_SCOPE_LU,
                SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY, &params, on_fence, this)
          : nullptr;
  if (!task) {
    if (state_ == State::up) fail_soon("cannot send PERSISTENT RESERVE OUT PREEMPT: " + error_text());
    return boost::asio::post(io_, [done = std::move(done)] { done(false); });
  }
  fence_done_ = std::move(done);
  fence_since_ = Clock::now();
  watch();
}

void LibiscsiPath::on_fence(iscsi_context* iscsi, int status, void* data, void* self) {
  auto* path = static_cast<LibiscsiPath*>(self);
  auto* task = static_cast<scsi_task*>(data);
  std::string why = status_text(status, task);
  const bool unit_attention = task && status == SCSI_STATUS_CHECK_CONDITION && task->sense.key == SCSI_SENSE_UNIT_ATTENTION;
  if (task) scsi_free_scsi_task(task);
  if (iscsi != path->ctx_) return;  // close_session answers the fence itself
  auto done = std::move(path->fence_done_);
  path->fence_done_ = nullptr;
  // RESERVATION CONFLICT: the key is registered no more (the target forgot it, or it was
  // preempted already); either way it can no longer write.
  bool fenced = status == SCSI_STATUS_GOOD || status == SCSI_STATUS_RESERVATION_CONFLICT;
  // A unit attention (this nexus learning of a reservation change: another preemption, a
  // hand-over's) is news, not a refusal: the command was not run. Send it again.
  if (!fenced && unit_attention &&
      ++path->fence_unit_attentions_ <= kMaxUnitAttentions && path->state_ == State::up)
    return path->send_fence(path->fence_key_, std::move(done));
  if (!fenced) path->fail_soon("PERSISTENT RESERVE OUT PREEMPT failed: " + why);
  if (done) done(fenced);
}

void LibiscsiPath::check() {
  if (state_ != State::up || checking_capacity_) return;
  scsi_task* task = iscsi_readcapacity16_task(ctx_, options_.lun, on_check, this);
  if (!task) return fail_soon("cannot send READ CAPACITY(16): " + error_text());
  checking_capacity_ = true;
  check_since_ = Clock::now();
  watch();
}

void LibiscsiPath::on_check(iscsi_context* iscsi, int status, void* data, void* self) {
  auto* path = static_cast<LibiscsiPath*>(self);
  auto* task = static_cast<scsi_task*>(data);
  if (iscsi == path->ctx_ && path->checking_capacity_) {
    path->checking_capacity_ = false;
    if (status == SCSI_STATUS_GOOD) {
      auto* capacity = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
      if (capacity && capacity->block_length != 0 &&
          (capacity->returned_lba + 1 != path->blocks_ || capacity->block_length != path->block_size_)) {
        path->blocks_ = capacity->returned_lba + 1;
        path->block_size_ = capacity->block_length;
        path->owner_.capacity_changed(*path);
      }
    } else if (!(status == SCSI_STATUS_CHECK_CONDITION && task &&
                 task->sense.key == SCSI_SENSE_UNIT_ATTENTION)) {
      path->fail_soon("READ CAPACITY(16) failed: " + status_text(status, task));
    }
  }
  if (task) scsi_free_scsi_task(task);
}

void LibiscsiPath::unregister(std::function<void()> done) {
  scsi_persistent_reserve_out_basic params{};
  params.reservation_key = key_;
  params.service_action_reservation_key = 0;
  scsi_task* task = state_ == State::up && registered_
                        ? iscsi_persistent_reserve_out_task(ctx_, options_.lun,
                                                            SCSI_PERSISTENT_RESERVE_REGISTER,
                                                            SCSI_PERSISTENT_RESERVE_SCOPE_LU, 0,
                                                            &params, on_unregister, this)
                        : nullptr;
  if (!task) return done();
  unregister_done_ = std::move(done);
  watch();
}

void LibiscsiPath::on_unregister(iscsi_context* iscsi, int status, void* data, void* self) {
  auto* path = static_cast<LibiscsiPath*>(self);
  if (data) scsi_free_scsi_task(static_cast<scsi_task*>(data));
  if (iscsi != path->ctx_) return;
  if (status == SCSI_STATUS_GOOD) path->registered_ = false;
  // Posted: the owner closes sessions next, which must not happen inside libiscsi.
  if (auto done = std::exchange(path->unregister_done_, nullptr)) boost::asio::post(path->io_, std::move(done));
}

void LibiscsiPath::enforce_timeouts(Clock::time_point now) {
  if (!ctx_) return;
  // The whole bring-up, not each of its steps: a target that answers every step just in time
  // would otherwise hold a start (which waits for every portal's first attempt) for ten times
  // as long.
  if (state_ == State::checking && now - connecting_since_ > options_.login_timeout) {
    const std::string limit = std::to_string(options_.login_timeout.count()) + " ms";
    const char* step = step_name(static_cast<int>(step_));
    return close_session(State::down, step_ == Step::login
                                          ? "no answer to login within " + limit
                                          : "not logged in and checked within " + limit +
                                                " (waiting for " + step + ")");
  }
  if (state_ != State::up) return;
  bool late = (fence_done_ && now - fence_since_ > options_.io_timeout) ||
              (checking_capacity_ && now - check_since_ > options_.io_timeout);
  for (IscsiIo* io : in_flight_) late = late || now - io->sent_at > options_.io_timeout;
  if (late)
    close_session(State::down, "a request got no answer within " +
                                   std::to_string(options_.io_timeout.count()) + " ms");
}

void LibiscsiPath::fail_soon(const std::string& why) {
  // The first failure is the cause; what follows (the service call that finds the socket
  // dead, cancelled requests) is only its consequence.
  if (failure_.empty()) failure_ = why;
  boost::asio::post(io_, [this, session = session_, why] {
    if (session == session_) close_session(State::down, why);
  });
}

void LibiscsiPath::abandon(const std::string& why) { close_session(State::down, why); }

void LibiscsiPath::refuse(const std::string& why) { close_session(State::refused, why); }

void LibiscsiPath::close_session(State next, const std::string& reason) {
  const std::string why = failure_.empty() ? reason : std::exchange(failure_, {});
  last_error_ = why;
  if (!ctx_) {
    if (next == State::refused) state_ = next;
    return;
  }
  iscsi_context* ctx = std::exchange(ctx_, nullptr);
  ++session_;
  const State was = state_;
  state_ = next;
  if (was == State::up) ++counters_.errors;
  checking_capacity_ = false;
  // Reset, never a graceful close: a FIN would let the kernel go on delivering whatever this
  // session still has queued, and delivering it late is exactly the hazard.
  int fd = release_socket();
  if (fd >= 0) {
    linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  const uint64_t fence_key = registered_ ? key_ : 0;
  registered_ = false;
  // Cancels what was in flight: each request comes back through on_io to be sent elsewhere.
  // The owner only queues them (it dispatches later, from its own turn), so it hears of the
  // fence key below before anything is sent again, and its log line counts them.
  iscsi_destroy_context(ctx);
  for (IscsiIo* io : std::exchange(in_flight_, {})) {
    io->task = nullptr;
    owner_.io_retry(io);
  }
  owner_.path_down(*this, why, fence_key);
  if (auto done = std::exchange(fence_done_, nullptr)) done(false);
  if (auto done = std::exchange(unregister_done_, nullptr)) done();
}

int LibiscsiPath::release_socket() {
  waiting_read_ = waiting_write_ = false;
  if (!socket_.is_open()) return -1;
  return socket_.release();  // cancels the waits; libiscsi owns and closes the descriptor
}

void LibiscsiPath::watch() {
  if (!ctx_) return;
  int fd = iscsi_get_fd(ctx_);
  if (fd < 0) return;
  if (!socket_.is_open() || socket_.native_handle() != fd) {
    release_socket();
    boost::system::error_code ec;
    socket_.assign(fd, ec);
    if (ec) return fail_soon("cannot watch the socket: " + ec.message());
  }
  const int events = iscsi_which_events(ctx_);
  const uint64_t session = session_;
  if ((events & POLLIN) && !waiting_read_) {
    waiting_read_ = true;
    socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this, session](const boost::system::error_code& ec) {
                         on_ready(session, POLLIN, ec);
                       });
  }
  if ((events & POLLOUT) && !waiting_write_) {
    waiting_write_ = true;
    socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                       [this, session](const boost::system::error_code& ec) {
                         on_ready(session, POLLOUT, ec);
                       });
  }
}

void LibiscsiPath::on_ready(uint64_t session, int revents, const boost::system::error_code& ec) {
  if (session != session_ || !ctx_) return;
  (revents == POLLIN ? waiting_read_ : waiting_write_) = false;
  if (ec == boost::asio::error::operation_aborted) return;
  if (ec) return close_session(State::down, "socket error: " + ec.message());
  if (iscsi_service(ctx_, revents) < 0) return close_session(State::down, lost_connection(error_text()));
  watch();
}

}  // namespace volgate::backends
