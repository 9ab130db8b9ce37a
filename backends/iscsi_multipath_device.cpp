#include "backends/iscsi_multipath_device.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

#include "backends/libiscsi_path.hpp"
#include "backends/network_device_thread.hpp"
#include "common/current_context.hpp"
#include "common/per_thread_pool.hpp"
#include "crypto/chap_secret.hpp"

namespace volgate::backends {
namespace {

constexpr auto kTickInterval = std::chrono::milliseconds(100);
// How long a request the target answered BUSY or TASK SET FULL waits before it is sent again
// (what the Linux SCSI layer waits for a full device queue, too).
constexpr auto kBusyPause = std::chrono::milliseconds(3);
constexpr uint64_t kProvisioningPart = 64 << 20;  // per UNMAP or WRITE SAME
// At shutdown, how long the paths get to drop their reservation keys.
constexpr auto kUnregisterTimeout = std::chrono::seconds(2);

// Named in the log so that an administrator can tell whose registration is whose on the LUN.
std::string key_text(const IscsiPath& path) {
  if (path.reservation_key() == 0) return {};
  return fmt::format("reservation key {:#x}", path.reservation_key());
}

constexpr uint64_t kKeyHostMask = 0xffffffff00000000;
constexpr uint64_t kKeyRunMask = 0x00000000ffff0000;

// The host part of our reservation keys: stable across restarts of a gateway on this host for
// this LUN and initiator name, and unlike another host's (or another initiator name's).
uint64_t host_key_part(const IscsiOptions& options) {
  std::string host;
  std::ifstream machine_id("/etc/machine-id");
  std::getline(machine_id, host);
  if (host.empty()) {
    char name[256] = {};
    gethostname(name, sizeof name - 1);
    host = name;
  }
  // FNV-1a: std::hash need not give the same value in the next run.
  uint64_t hash = 0xcbf29ce484222325;
  for (const std::string& part :
       {host, options.initiator_name, options.target, std::to_string(options.lun)}) {
    for (unsigned char c : part + '\n') hash = (hash ^ c) * 0x100000001b3;
  }
  return ((hash >> 32) ^ hash) << 32;
}

// The run part and the session numbers belong to the process, not to one device: two exports of
// the same LUN in one gateway must neither take each other's keys for leftovers of an earlier
// run nor ever register the same key.
uint64_t process_run_part() {
  static const uint64_t run = [] {
    std::random_device random;
    uint64_t part = 0;
    while (part == 0) part = (uint64_t{random()} & 0xffff) << 16;
    return part;
  }();
  return run;
}
std::atomic<uint64_t> session_numbers{0};

}  // namespace

std::string describe(const IscsiOptions& options) {
  std::string portals;
  for (const auto& portal : options.portals) portals += (portals.empty() ? "" : ",") + portal;
  return "iscsi " + options.target + "/" + std::to_string(options.lun) + " via " + portals;
}

std::shared_ptr<IscsiMultipathDevice> IscsiMultipathDevice::open(const IscsiOptions& options,
                                                                 PathFactory make_path) {
  if (!make_path)
    make_path = [](boost::asio::io_context& io, size_t index, const std::string& portal,
                   const IscsiOptions& options, const IscsiCredentials& credentials,
                   IscsiPath::Owner& owner) -> std::unique_ptr<IscsiPath> {
      return std::make_unique<LibiscsiPath>(io, index, portal, options, credentials, owner);
    };
  std::shared_ptr<IscsiMultipathDevice> device(new IscsiMultipathDevice(options, make_path));
  device->start();
  return device;
}

IscsiMultipathDevice::IscsiMultipathDevice(const IscsiOptions& options,
                                           const PathFactory& make_path)
    : options_(options), tick_timer_(io_), check_timer_(io_), stop_timer_(io_), busy_timer_(io_) {
  if (options_.portals.empty()) throw std::invalid_argument("no portal given");
  if (!options_.chap_user.empty()) {
    if (options_.chap_secret_file.empty()) throw std::invalid_argument("chap-user needs chap-secret-file");
    chap_secret_ = crypto::read_chap_secret(options_.chap_secret_file);
    credentials_.chap_user = options_.chap_user.c_str();
    credentials_.chap_secret = chap_secret_.chars();
  }
  if (!options_.mutual_chap_user.empty()) {
    if (options_.chap_user.empty()) throw std::invalid_argument("mutual CHAP needs chap-user too");
    if (options_.mutual_chap_secret_file.empty())
      throw std::invalid_argument("mutual-chap-user needs mutual-chap-secret-file");
    mutual_secret_ = crypto::read_chap_secret(options_.mutual_chap_secret_file);
    credentials_.mutual_user = options_.mutual_chap_user.c_str();
    credentials_.mutual_secret = mutual_secret_.chars();
  }
  key_host_ = host_key_part(options_);
  key_run_ = process_run_part();
  reported_up_.assign(options_.portals.size(), false);
  path_metrics_ = std::make_unique<PathMetrics[]>(options_.portals.size());
  last_down_reason_.resize(options_.portals.size());
  announced_checking_.assign(options_.portals.size(), false);
  IscsiPath::Owner& owner = *this;
  for (size_t i = 0; i < options_.portals.size(); ++i)
    paths_.push_back(make_path(io_, i, options_.portals[i], options_, credentials_, owner));
}

void IscsiMultipathDevice::start() {
  keep_running_.emplace(io_.get_executor());
  thread_ = start_network_device_thread(io_, "volgate-iscsi");
  boost::asio::post(io_, [this] {
    // A portal that fails at once (an unknown host) must not settle the start before the
    // others have even been tried.
    launching_ = true;
    for (auto& path : paths_) path->connect(next_reservation_key());
    launching_ = false;
    tick();
  });
  std::unique_lock lock(start_mutex_);
  start_settled_cv_.wait(lock, [this] { return start_settled_; });
  if (!start_error_.empty()) {
    lock.unlock();
    stop();
    throw std::runtime_error(start_error_);
  }
  boost::asio::post(io_, [this] { check_paths(); });
}

IscsiMultipathDevice::~IscsiMultipathDevice() { stop(); }

void IscsiMultipathDevice::stop() {
  if (!thread_.joinable()) return;
  boost::asio::post(io_, [this] {
    stopping_ = true;
    auto pending = std::make_shared<size_t>(1);
    auto finish = [this, pending](bool now) {
      if (*pending == 0 || (--*pending != 0 && !now)) return;
      *pending = 0;  // the timeout and the answers may all come; finish once
      for (auto& path : paths_) {
        // A device that never opened leaves its one error line to the caller.
        if (start_error_.empty()) log_path(Tone::news, *path, "closing");
        path->abandon("closing");
      }
      // Nothing should be waiting (the server drains before it stops), but never leave a
      // caller without an answer.
      for (Request* request : std::exchange(queue_, {})) complete(request, errno_code(EIO));
      for (Request* request : std::exchange(busy_, {})) complete(request, errno_code(EIO));
      busy_timer_.cancel();
      tick_timer_.cancel();
      check_timer_.cancel();
      stop_timer_.cancel();
      keep_running_.reset();
    };
    // Drop our reservation keys so that the LUN is free for other initiators afterwards.
    for (auto& path : paths_) {
      if (path->reservation_key() == 0 || keep_registrations_) continue;
      ++*pending;
      path->unregister([finish] { finish(false); });
    }
    // A path that never answers must not hold the shutdown up.
    stop_timer_.expires_after(kUnregisterTimeout);
    stop_timer_.async_wait([finish](const boost::system::error_code& ec) {
      if (!ec) finish(true);
    });
    finish(false);  // the initial count of one
  });
  thread_.join();
}

void IscsiMultipathDevice::handover_committed(bool successor) {
  boost::asio::post(io_, [this, successor] {
    if (!successor) {
      // Dormant from here on: the successor writes through its own sessions and preempts
      // ours. A reconnect of ours would see its keys as leftovers of an earlier run and
      // preempt them, and a request of ours would fail anyway.
      keep_registrations_ = true;
      stopping_ = true;
      check_timer_.cancel();
      for (auto& path : paths_) path->abandon("handed over to another process");
      return;
    }
    handover_committed_ = true;
    for (uint64_t key : std::exchange(fences_after_handover_, {})) {
      if (std::find(fences_.begin(), fences_.end(), key) != fences_.end()) continue;
      spdlog::info("{}: preempting the reservation key {:#x} of the gateway this one took over from",
                   options_.target, key);
      fences_.push_back(key);
    }
    schedule_dispatch();
  });
}

DeviceCapabilities IscsiMultipathDevice::capabilities() const {
  DeviceCapabilities caps;
  caps.read_only = options_.read_only;
  // Without DPOFUA the target ignores FUA: the device front then flushes after the write.
  caps.can_fua = !options_.read_only && fua_native_;
  caps.can_flush = true;
  caps.can_trim = can_unmap_;
  caps.can_zero = can_write_same_;
  caps.can_fast_zero = can_write_same_;
  caps.can_multi_conn = true;  // one device, one session per path: a flush covers everything
  caps.writes_shared_at_once = true;  // the target holds them
  caps.min_block_size = block_size_;
  caps.preferred_block_size = std::max<uint32_t>(4096, block_size_);
  return caps;
}

std::string IscsiMultipathDevice::description() const { return describe(options_); }

void IscsiMultipathDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  submit(IscsiIo::Kind::read, offset, data.data(), data.size(), false, std::move(done));
}

void IscsiMultipathDevice::write(uint64_t offset, std::span<const std::byte> data,
                                 WriteFlags flags, Completion done) {
  // libiscsi only reads a write's buffer.
  auto* bytes = const_cast<std::byte*>(data.data());
  submit(IscsiIo::Kind::write, offset, bytes, data.size(), flags.fua, std::move(done));
}

void IscsiMultipathDevice::flush(Completion done) {
  submit(IscsiIo::Kind::flush, 0, nullptr, 0, false, std::move(done));
}

// Large trims and zeroings go out one part after the other: a part is bounded so that a target
// that writes rather than deallocates still answers well within the request timeout, and in
// sequence so that many parts never pile up at once. UNMAP and WRITE SAME(16) cannot carry FUA:
// with `fua`, a flush follows the last part.
struct IscsiMultipathDevice::PartWriter {
  IscsiMultipathDevice* device;
  IscsiIo::Kind kind;
  uint64_t offset;
  uint64_t remaining;
  uint64_t part;
  bool fua;
  bool deallocate;
  Completion done;

  static void next(std::unique_ptr<PartWriter> self) {
    const uint64_t length = std::min(self->remaining, self->part);
    PartWriter* raw = self.release();
    raw->device->submit(raw->kind, raw->offset, nullptr, length, false,
                        [raw, length](std::error_code ec) {
                          std::unique_ptr<PartWriter> owned(raw);
                          owned->offset += length;
                          owned->remaining -= length;
                          if (!ec && owned->remaining > 0) return next(std::move(owned));
                          if (ec || !owned->fua) return owned->done(ec);
                          owned->device->flush(std::move(owned->done));
                        },
                        ~uint64_t{0}, raw->deallocate);
  }
};

void IscsiMultipathDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  PartWriter::next(std::unique_ptr<PartWriter>(new PartWriter{
      this, IscsiIo::Kind::unmap, offset, length, unmap_part_bytes_, false, true, std::move(done)}));
}

// With WRITE SAME(16), one zero block per part goes over the wire (and the target may
// deallocate when the caller allows it); without it, ENOTSUP: the device front writes them.
void IscsiMultipathDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags,
                                        Completion done) {
  if (!can_write_same_) return done(errno_code(ENOTSUP));
  PartWriter::next(std::unique_ptr<PartWriter>(new PartWriter{
      this, IscsiIo::Kind::zero, offset, length, write_same_part_bytes_, flags.fua, flags.may_trim,
      std::move(done)}));
}

// No allocation data (can_block_status is false): the device front answers "all data".
void IscsiMultipathDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  (void)offset;
  done({}, {Extent{length, false, false}});
}

void IscsiMultipathDevice::submit(IscsiIo::Kind kind, uint64_t offset, std::byte* data,
                                  uint64_t length, bool fua, Completion done, uint64_t limit,
                                  bool deallocate) {
  if (kind == IscsiIo::Kind::read || kind == IscsiIo::Kind::write) limit = max_transfer_bytes_.load();
  if (kind == IscsiIo::Kind::flush || limit == 0 || length <= limit)
    return submit_one(kind, offset, data, length, fua, deallocate, std::move(done));
  // A larger request would come back ILLEGAL REQUEST. The parts run in parallel, each failed
  // over on its own; the caller hears once, with the first error, when all have finished.
  struct Parts {
    std::atomic<uint64_t> left;
    std::mutex mutex;
    std::error_code first_error;
    Completion done;
  };
  auto parts = std::make_shared<Parts>();
  parts->left = (length + limit - 1) / limit;
  parts->done = std::move(done);
  for (uint64_t at = 0; at < length; at += limit) {
    submit_one(kind, offset + at, data ? data + at : nullptr, std::min(limit, length - at), fua,
               deallocate, [parts](std::error_code ec) {
                 if (ec) {
                   std::lock_guard lock(parts->mutex);
                   if (!parts->first_error) parts->first_error = ec;
                 }
                 if (parts->left.fetch_sub(1) != 1) return;
                 std::error_code result;
                 {
                   std::lock_guard lock(parts->mutex);
                   result = parts->first_error;
                 }
                 parts->done(result);
               });
  }
}

void IscsiMultipathDevice::submit_one(IscsiIo::Kind kind, uint64_t offset, std::byte* data,
                                      uint64_t length, bool fua, bool deallocate, Completion done) {
  auto* request = PerThreadPool<Request>::make();
  request->deallocate = deallocate;
  request->kind = kind;
  request->offset = offset;
  request->data = data;
  request->length = length;
  request->fua = fua;
  request->done = std::move(done);
  request->caller = &current_io_context();
  request->busy.emplace(request->caller->get_executor());
  boost::asio::post(io_, [this, request] {
    request->waiting_since = request->submitted_at = Clock::now();
    if (stopping_) return complete(request, errno_code(EIO));
    queue_.push_back(request);
    dispatch();
  });
}

void IscsiMultipathDevice::complete(Request* request, std::error_code ec) {
  boost::asio::io_context& caller = *request->caller;
  // The request's own work guard goes with the handler, which may run (and the caller's
  // io_context return and be destroyed, as at the final flush) before post() has finished
  // waking it. A second unit of work, given up only after post() returns, prevents that.
  WorkGuard posting = *request->busy;
  boost::asio::post(caller, [request, ec] {
    Completion done = std::move(request->done);
    PerThreadPool<Request>::destroy(request);  // on the thread that made it
    done(ec);
  });
}

void IscsiMultipathDevice::schedule_dispatch() {
  if (dispatch_posted_) return;
  dispatch_posted_ = true;
  boost::asio::post(io_, [this] {
    dispatch_posted_ = false;
    dispatch();
  });
}

void IscsiMultipathDevice::dispatch() {
  if (starting_ || stopping_) return;
  // Nothing moves while a dead session's writes could still land.
  if (!fences_.empty()) return start_fence();
  // Bounded: a path may hand a request straight back (it could not queue it).
  for (size_t n = queue_.size(); n > 0 && !queue_.empty(); --n) {
    IscsiPath* path = pick_path();
    if (!path) return;
    Request* request = queue_.front();
    queue_.pop_front();
    path->submit(request);
  }
}

IscsiPath* IscsiMultipathDevice::pick_path() {
  const size_t count = paths_.size();
  if (options_.path_policy == PathPolicy::failover) {
    for (auto& path : paths_)
      if (path->state() == IscsiPath::State::up) return path.get();
    return nullptr;
  }
  for (size_t i = 0; i < count; ++i) {
    IscsiPath* path = paths_[(next_path_ + i) % count].get();
    if (path->state() != IscsiPath::State::up) continue;
    next_path_ = (path->index() + 1) % count;
    return path;
  }
  return nullptr;
}

bool IscsiMultipathDevice::any_path_up() const {
  return std::any_of(paths_.begin(), paths_.end(),
                     [](const auto& path) { return path->state() == IscsiPath::State::up; });
}

void IscsiMultipathDevice::start_fence() {
  if (fencing_ || fences_.empty()) return;
  IscsiPath* path = pick_path();
  if (!path) return;  // the first path to come up fences before anything else
  fencing_ = true;
  const uint64_t key = fences_.front();
  const auto started = Clock::now();
  path->fence(key, [this, key, started, portal = path->portal()](bool fenced) {
    fencing_ = false;
    if (fenced) {
      std::erase(fences_, key);
      spdlog::info("{}: preempted the reservation key {:#x} of a lost session through {} in {} ms; "
                   "its queued writes can no longer land",
                   options_.target, key, portal,
                   std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
    }
    schedule_dispatch();
  });
}

void IscsiMultipathDevice::tick() {
  if (stopping_) return;
  const auto now = Clock::now();
  for (auto& path : paths_) path->enforce_timeouts(now);
  // Requests that waited for a path for too long fail; the rest keep their place.
  if (!queue_.empty() && !starting_) {
    std::vector<Request*> expired;
    std::erase_if(queue_, [&](Request* request) {
      if (now - request->waiting_since < options_.no_path_timeout) return false;
      expired.push_back(request);
      return true;
    });
    if (!expired.empty())
      spdlog::error("{}: {} request{} failed with EIO after waiting {} s for a path", options_.target,
                    expired.size(), expired.size() == 1 ? "" : "s", options_.no_path_timeout.count());
    for (Request* request : expired) complete(request, errno_code(EIO));
  }
  finish_start_when_settled();
  tick_timer_.expires_after(kTickInterval);
  tick_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

void IscsiMultipathDevice::check_paths() {
  if (stopping_) return;
  for (auto& path : paths_) {
    if (path->state() == IscsiPath::State::down) {
      path->connect(next_reservation_key());
      // Said once per outage; the reason of each failed attempt is logged when it changes.
      if (!announced_checking_[path->index()] && path->state() == IscsiPath::State::checking)
        log_path(Tone::news, *path, "checking (reconnecting)");
      announced_checking_[path->index()] = true;
    } else if (path->state() == IscsiPath::State::up) {
      path->check();
    }
  }
  check_timer_.expires_after(options_.path_check_interval);
  check_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) check_paths();
  });
}

uint64_t IscsiMultipathDevice::next_reservation_key() {
  if (options_.read_only || !options_.reservations) return 0;  // nothing to fence
  // Unique per session: a key names exactly one session to preempt when it is lost.
  uint64_t session = 0;
  while (session == 0) session = ++session_numbers & 0xffff;
  return key_host_ | key_run_ | session;
}

// A gateway killed without its clean exit leaves its keys registered, and perhaps the
// reservation held by one of them. Our host part with another run's bits can only be such a
// leftover: it is preempted like the key of a lost session, before any request goes out. Keys
// of other hosts, and of this run, are never touched.
void IscsiMultipathDevice::fence_earlier_runs(const IscsiPath& path) {
  if (options_.read_only || !options_.reservations) return;
  for (uint64_t key : path.registered_keys()) {
    if ((key & kKeyHostMask) != key_host_ || (key & kKeyRunMask) == key_run_) continue;
    if (std::find(fences_.begin(), fences_.end(), key) != fences_.end()) continue;
    if (options_.take_over && !handover_committed_) {
      if (std::find(fences_after_handover_.begin(), fences_after_handover_.end(), key) == fences_after_handover_.end())
        fences_after_handover_.push_back(key);
      continue;
    }
    spdlog::warn("{}: reservation key {:#x} was left by an earlier run of this gateway on this "
                 "host; preempting it",
                 options_.target, key);
    fences_.push_back(key);
  }
}

// The smallest limit of any path, so that a request split for one fits every other.
void IscsiMultipathDevice::adopt_transfer_limit(const IscsiPath& path) {
  const uint64_t limit = uint64_t{path.max_transfer_blocks()} * block_size_;
  if (limit == 0) return;
  uint64_t current = max_transfer_bytes_.load();
  while ((current == 0 || limit < current) &&
         !max_transfer_bytes_.compare_exchange_weak(current, limit)) {
  }
}

// The first attempt on every portal has ended: decide whether the device can open.
void IscsiMultipathDevice::finish_start_when_settled() {
  if (!starting_ || launching_) return;
  for (auto& path : paths_)
    if (path->state() == IscsiPath::State::checking) return;
  starting_ = false;
  std::string error;
  IscsiPath* reference = nullptr;
  for (auto& path : paths_) {
    if (path->state() != IscsiPath::State::up) continue;
    if (!reference) {
      reference = path.get();
      continue;
    }
    if (path->identity() != reference->identity() && error.empty())
      error = "portal " + path->portal() + " shows a different LUN (VPD 0x83 " + path->identity() +
              ") than portal " + reference->portal() + " (" + reference->identity() + ")";
  }
  if (!reference && error.empty()) {
    error = "no path to " + options_.target + " LUN " + std::to_string(options_.lun) + ":";
    for (auto& path : paths_) error += " " + path->portal() + ": " + path->last_error() + ";";
    error.pop_back();
  }
  if (error.empty()) {
    identity_ = reference->identity();
    block_size_ = reference->block_size();
    size_.store(reference->blocks() * block_size_, std::memory_order_relaxed);
    for (auto& path : paths_) {
      if (path->state() == IscsiPath::State::up) {
        adopt_transfer_limit(*path);
        fence_earlier_runs(*path);
      }
      reported_up_[path->index()] = path->state() == IscsiPath::State::up;
      if (reported_up_[path->index()]) note_path_up(*path);
      if (path->state() == IscsiPath::State::up)
        log_path(Tone::news, *path, "up", key_text(*path));
      else
        log_path(Tone::trouble, *path, "down", last_down_reason_[path->index()] = path->last_error());
    }
    // Parts small enough to finish well within the request timeout even where the target
    // writes instead of deallocating.
    const uint64_t part_blocks = kProvisioningPart / block_size_;
    auto part = [&](uint64_t max_blocks) {
      return (max_blocks == 0 ? part_blocks : std::min(part_blocks, max_blocks)) * block_size_;
    };
    can_unmap_ = !options_.read_only && reference->can_unmap();
    can_write_same_ = !options_.read_only && reference->can_write_same();
    fua_native_ = reference->supports_fua();
    if (!fua_native_ && !options_.read_only)
      spdlog::info("{}: the target does not honour FUA (no DPOFUA in MODE SENSE): a forced write is "
                   "followed by SYNCHRONIZE CACHE", options_.target);
    unmap_part_bytes_ = part(reference->max_unmap_blocks());
    write_same_part_bytes_ = part(reference->max_write_same_blocks());
    if (!reference->reservations_supported() && !options_.read_only) {
      warned_no_reservations_ = true;
      spdlog::warn("{}: the target does not support persistent reservations: a lost path's queued "
                   "writes cannot be fenced, only its connection reset", options_.target);
    }
  }
  stopping_ = !error.empty();  // open() throws; nothing more is logged or dispatched
  {
    std::lock_guard lock(start_mutex_);
    start_error_ = error;
    start_settled_ = true;
  }
  start_settled_cv_.notify_all();
  schedule_dispatch();
}

void IscsiMultipathDevice::log_path(Tone tone, const IscsiPath& path, const char* event,
                                    const std::string& why) const {
  const auto& c = path.counters();
  const bool preferred = options_.path_policy == PathPolicy::failover && path.index() == 0;
  auto level = tone == Tone::trouble ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(level, "{}: path {} {}: {}{}{}{} [state {}, ios {}, errors {}, failovers {}]",
              options_.target, path.index(), path.portal(), event, preferred ? " (preferred)" : "",
              why.empty() ? "" : ": ", why, to_string(path.state()), c.ios, c.errors, c.failovers);
}

void IscsiMultipathDevice::path_up(IscsiPath& path) {
  if (starting_) return finish_start_when_settled();
  if (stopping_ || reported_up_[path.index()]) return;
  if (path.identity() != identity_) {
    std::string why = "shows a different LUN (VPD 0x83 " + path.identity() + ", expected " + identity_ + ")";
    path.refuse(why);
    return log_path(Tone::trouble, path, "refused", why);
  }
  if (path.block_size() != block_size_) {
    path.refuse("block size changed");
    return log_path(Tone::trouble, path, "refused", "block size changed");
  }
  reported_up_[path.index()] = true;
  note_path_up(path);
  announced_checking_[path.index()] = false;
  adopt_transfer_limit(path);
  fence_earlier_runs(path);
  last_down_reason_[path.index()].clear();
  capacity_changed(path);
  const bool failback = options_.path_policy == PathPolicy::failover && path.index() == 0;
  log_path(Tone::news, path, failback ? "up, failing back to it" : "up", key_text(path));
  if (!path.reservations_supported() && !options_.read_only && !warned_no_reservations_) {
    warned_no_reservations_ = true;
    spdlog::warn("{}: the target does not support persistent reservations: a lost path's queued "
                 "writes cannot be fenced, only its connection reset", options_.target);
  }
  schedule_dispatch();
}

void IscsiMultipathDevice::path_down(IscsiPath& path, const std::string& why, uint64_t fence_key) {
  if (fence_key != 0) fences_.push_back(fence_key);
  const bool was_up = reported_up_[path.index()];
  reported_up_[path.index()] = false;
  if (was_up) {
    PathMetrics& m = path_metrics_[path.index()];
    m.up.store(false, std::memory_order_relaxed);
    bump(m.failovers);
    m.lost = true;
  }
  if (stopping_) return;
  if (starting_) return finish_start_when_settled();
  // A path that stays down is tried every path-check-interval: say so once per reason.
  std::string& last = last_down_reason_[path.index()];
  if (was_up || why != last) log_path(Tone::trouble, path, was_up ? "down" : "still down", why);
  last = why;
  if (was_up && !any_path_up())
    spdlog::error("{}: no path is up; requests wait up to {} s for one", options_.target,
                  options_.no_path_timeout.count());
  schedule_dispatch();
}

void IscsiMultipathDevice::note_path_up(const IscsiPath& path) {
  PathMetrics& m = path_metrics_[path.index()];
  m.up.store(true, std::memory_order_relaxed);
  m.last_success_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  if (m.lost) bump(m.failbacks);
  m.lost = false;
}

void IscsiMultipathDevice::report_metrics(MetricsReport& report, const MetricLabels& labels) const {
  constexpr const char* kUp = "volgate_iscsi_path_up";
  constexpr const char* kUpHelp = "1 while an iSCSI path is logged in and checked, else 0.";
  constexpr const char* kFailovers = "volgate_iscsi_path_failovers_total";
  constexpr const char* kFailoversHelp = "Times an iSCSI path was lost while up (its requests went to other paths).";
  constexpr const char* kFailbacks = "volgate_iscsi_path_failbacks_total";
  constexpr const char* kFailbacksHelp = "Times a lost iSCSI path came back up and took requests again.";
  constexpr const char* kSince = "volgate_iscsi_path_seconds_since_success";
  constexpr const char* kSinceHelp =
      "Seconds since a request (or the path's check at bring-up) last succeeded on an iSCSI path; absent "
      "until one has.";
  const int64_t now = Clock::now().time_since_epoch().count();
  for (size_t i = 0; i < options_.portals.size(); ++i) {
    const PathMetrics& m = path_metrics_[i];
    MetricLabels with = labels;
    with.emplace_back("path", std::to_string(i));
    with.emplace_back("portal", options_.portals[i]);
    report.add(kUp, MetricType::gauge, kUpHelp, with, m.up.load(std::memory_order_relaxed) ? 1 : 0);
    report.add(kFailovers, MetricType::counter, kFailoversHelp, with,
               static_cast<double>(m.failovers.load(std::memory_order_relaxed)));
    report.add(kFailbacks, MetricType::counter, kFailbacksHelp, with,
               static_cast<double>(m.failbacks.load(std::memory_order_relaxed)));
    const int64_t last = m.last_success_ns.load(std::memory_order_relaxed);
    if (last != 0)
      report.add(kSince, MetricType::gauge, kSinceHelp, with, static_cast<double>(std::max<int64_t>(now - last, 0)) / 1e9);
  }
}

void IscsiMultipathDevice::io_done(IscsiIo* io, std::error_code ec) {
  if (!ec && io->path)
    path_metrics_[io->path->index()].last_success_ns.store(Clock::now().time_since_epoch().count(),
                                                           std::memory_order_relaxed);
  complete(static_cast<Request*>(io), ec);
  if (!queue_.empty()) schedule_dispatch();
}

void IscsiMultipathDevice::io_retry(IscsiIo* io) {
  auto* request = static_cast<Request*>(io);
  request->path = nullptr;
  request->waiting_since = Clock::now();
  // A request that brings down every path it is sent on (a target that hangs on those blocks)
  // would otherwise go round the paths for ever, taking each down in turn, and the client would
  // never hear. After no-path-timeout it fails like a request that found no path.
  if (request->waiting_since - request->submitted_at >= options_.no_path_timeout) {
    spdlog::error("{}: a request failed with EIO after failing over between paths for {} s",
                  options_.target, options_.no_path_timeout.count());
    return complete(request, errno_code(EIO));
  }
  queue_.push_front(request);
  schedule_dispatch();
}

void IscsiMultipathDevice::io_busy(IscsiIo* io) {
  auto* request = static_cast<Request*>(io);
  request->path = nullptr;
  // A target that stays busy is as good as none: fail after no-path-timeout like io_retry.
  if (Clock::now() - request->submitted_at >= options_.no_path_timeout) {
    spdlog::error("{}: a request failed with EIO: the target kept answering BUSY for {} s",
                  options_.target, options_.no_path_timeout.count());
    return complete(request, errno_code(EIO));
  }
  busy_.push_back(request);
  if (busy_.size() > 1) return;  // the pause is already running; this one goes with the rest
  busy_timer_.expires_after(kBusyPause);
  busy_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    // Back to the front of the queue, in the order they were answered.
    queue_.insert(queue_.begin(), busy_.begin(), busy_.end());
    busy_.clear();
    schedule_dispatch();
  });
}

void IscsiMultipathDevice::capacity_changed(IscsiPath& path) {
  if (path.block_size() != block_size_) return;
  uint64_t size = path.blocks() * block_size_;
  uint64_t old = size_.exchange(size, std::memory_order_relaxed);
  if (old != size)
    spdlog::info("{}: the LUN's size changed from {} to {} bytes", options_.target, old, size);
}

}  // namespace volgate::backends
