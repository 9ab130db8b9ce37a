#define FUSE_USE_VERSION 35
#include "gateway/fuse_front_end.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>  // FUSE_DEV_IOC_CLONE
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <future>
#include <stdexcept>

#include "backends/read_modify_write_device.hpp"
#include "common/current_context.hpp"

namespace volgate::gateway {

namespace asio = boost::asio;
using backends::Extent;

namespace {

constexpr fuse_ino_t kRootInode = FUSE_ROOT_ID;
// Background requests the kernel may have outstanding (async direct I/O, libaio): its default
// of 12 would cap a queue depth of 32 at 12.
constexpr unsigned kMaxBackground = 128;
// A lseek(SEEK_DATA/SEEK_HOLE) asks for block status in steps this large.
constexpr uint64_t kSeekStep = uint64_t{1} << 30;
// How often the sizes of open and known files are compared with their exports' (RBD and iSCSI
// volumes grow while served).
constexpr auto kSizeCheckInterval = std::chrono::seconds(1);

// libfuse's own messages go to our log.
void log_from_libfuse(enum fuse_log_level level, const char* format, va_list args) {
  char text[512];
  std::vsnprintf(text, sizeof text, format, args);
  std::string_view line(text);
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (level <= FUSE_LOG_ERR)
    spdlog::error("fuse: {}", line);
  else if (level <= FUSE_LOG_NOTICE)
    spdlog::info("fuse: {}", line);
  else
    spdlog::debug("fuse: {}", line);
}

FuseFrontEnd* self_of(fuse_req_t req) { return static_cast<FuseFrontEnd*>(fuse_req_userdata(req)); }

struct timespec now_realtime() {
  struct timespec t {};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

// A second descriptor of the mount's FUSE connection: requests read from it are answered on it.
int clone_fuse_device(int session_fd, const std::string& mount_point) {
  const int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw std::runtime_error("--fuse " + mount_point + ": opening /dev/fuse: " + std::strerror(errno));
  uint32_t original = static_cast<uint32_t>(session_fd);
  if (::ioctl(fd, FUSE_DEV_IOC_CLONE, &original) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error("--fuse " + mount_point + ": cloning the FUSE descriptor: " + std::strerror(error));
  }
  return fd;
}

}  // namespace

// One serving thread: its io_context, its descriptor of the connection, its requests.
struct FuseFrontEnd::Worker {
  Worker(size_t index, int fd, size_t max_in_flight)
      : index(index), fd(fd), max_in_flight(max_in_flight), device(io),
        receive_buffer(Buffer::allocate(kMaxRequestBytes + 4096)) {}

  const size_t index;
  const int fd;  // the session's for the first worker (libfuse closes it), a clone for the others
  const size_t max_in_flight;
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> keep_alive;
  asio::posix::stream_descriptor device;
  std::thread thread;
  Buffer receive_buffer;
  bool watching = false;
  bool stopping = false;  // reads no more requests
  bool drained = false;   // stopping, and nothing in flight any more: told the first worker
  size_t in_flight = 0;
  std::vector<std::unique_ptr<Request>> all_requests;
  std::vector<Request*> free_requests;
};

namespace {

// The worker whose thread this is; null on other threads.
thread_local FuseFrontEnd::Worker* this_worker = nullptr;

// libfuse's reads and answers, on the calling worker's descriptor: a request is answered on the
// descriptor it came from, which is the one of the thread that read it, since a request's
// completion runs on that thread. Elsewhere (notifications from other threads) the session's.
ssize_t read_device(int fd, void* buf, size_t length, void*) {
  return ::read(this_worker ? this_worker->fd : fd, buf, length);
}
ssize_t write_device(int fd, struct iovec* iov, int count, void*) {
  return ::writev(this_worker ? this_worker->fd : fd, iov, count);
}

}  // namespace

unsigned FuseFrontEnd::default_threads() {
  return std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

struct FuseFrontEnd::Request {
  FuseFrontEnd* self = nullptr;
  Worker* worker = nullptr;  // whose thread runs it, and whose pool it goes back to
  fuse_req_t req = nullptr;
  Handle* handle = nullptr;
  Buffer data;  // a write's payload, or a read's result
  std::span<const std::byte> payload;  // what a write writes (in `data`)
  uint64_t offset = 0;
  size_t length = 0;
  int whence = 0;
  // What the export's counters count it as; SEEK_DATA/SEEK_HOLE (unknown) are not counted.
  nbd::RequestKind kind = nbd::RequestKind::unknown;
  bool calling = false;          // seek_next: inside the device call
  bool continue_inline = false;  // seek_next: the call completed inside and wants the next step
};

// The table libfuse calls through: each entry finds the front-end in the request's userdata.
struct FuseFrontEnd::Ops {
  static void init(void* userdata, fuse_conn_info* conn) { static_cast<FuseFrontEnd*>(userdata)->on_init(conn); }
  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) { self_of(req)->on_lookup(req, parent, name); }
  static void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    self_of(req)->on_forget(ino, nlookup);
    fuse_reply_none(req);
  }
  static void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    FuseFrontEnd* self = self_of(req);
    {
      std::lock_guard lock(self->mutex_);
      for (size_t i = 0; i < count; ++i) self->forget_locked(forgets[i].ino, forgets[i].nlookup);
    }
    fuse_reply_none(req);
  }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { self_of(req)->on_getattr(req, ino, fi); }
  static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
    self_of(req)->on_setattr(req, ino, attr, to_set, fi);
  }
  static void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { self_of(req)->on_opendir(req, ino, fi); }
  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    self_of(req)->on_readdir(req, ino, size, off, fi);
  }
  static void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { self_of(req)->on_releasedir(req, ino, fi); }
  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { self_of(req)->on_open(req, ino, fi); }
  static void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { self_of(req)->on_release(req, ino, fi); }
  static void read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
    self_of(req)->on_read(req, size, off, fi);
  }
  static void write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info* fi) {
    self_of(req)->on_write(req, data, size, off, fi);
  }
  static void flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
  static void fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) { self_of(req)->on_fsync(req, fi); }
  static void fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length, fuse_file_info* fi) {
    self_of(req)->on_fallocate(req, mode, offset, length, fi);
  }
  static void lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
    self_of(req)->on_lseek(req, off, whence, fi);
  }

  static fuse_lowlevel_ops table() {
    fuse_lowlevel_ops ops{};
    ops.init = init;
    ops.lookup = lookup;
    ops.forget = forget;
    ops.forget_multi = forget_multi;
    ops.getattr = getattr;
    ops.setattr = setattr;
    ops.opendir = opendir;
    ops.readdir = readdir;
    ops.releasedir = releasedir;
    ops.open = open;
    ops.release = release;
    ops.read = read;
    ops.write = write;
    ops.flush = flush;
    ops.fsync = fsync;
    ops.fallocate = fallocate;
    ops.lseek = lseek;
    return ops;
  }
};

FuseFrontEnd::FuseFrontEnd(const nbd::ExportTable& exports, std::string mount_point, unsigned threads)
    : exports_(exports),
      mount_point_(std::move(mount_point)),
      mounted_at_(now_realtime()),
      uid_(::getuid()),
      gid_(::getgid()) {
  if (threads < 1 || threads > kMaxThreads)
    throw std::invalid_argument("--fuse-threads must be 1-" + std::to_string(kMaxThreads));
  fuse_set_log_func(log_from_libfuse);
  // fsname and subtype make the mount show as "volgate" of type fuse.volgate (which
  // prepare_fuse_mount_point looks for); default_permissions lets the kernel apply the files'
  // modes (0600, 0400 for read-only exports) to anyone but root.
  const char* argv[] = {"volgate", "-o", "fsname=volgate,subtype=volgate,default_permissions"};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  const fuse_lowlevel_ops ops = Ops::table();
  session_ = fuse_session_new(&args, &ops, sizeof ops, this);
  fuse_opt_free_args(&args);  // parsing copied them
  if (!session_) throw std::runtime_error("--fuse " + mount_point_ + ": cannot create a FUSE session");
  if (fuse_session_mount(session_, mount_point_.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    throw std::runtime_error("--fuse " + mount_point_ + ": mounting failed (see the lines above; is /dev/fuse there?)");
  }
  const int fd = fuse_session_fd(session_);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  // The same descriptor, mounted as before; only libfuse's reads and writes go through us.
  const fuse_custom_io io{.writev = write_device, .read = read_device, .splice_receive = nullptr, .splice_send = nullptr};
  if (fuse_session_custom_io(session_, &io, fd) != 0) {
    fuse_session_unmount(session_);
    fuse_session_destroy(session_);
    session_ = nullptr;
    throw std::runtime_error("--fuse " + mount_point_ + ": cannot set the session's I/O");
  }
  const size_t share = std::max<size_t>(1, kMaxRequestsInFlight / threads);
  try {
    for (unsigned i = 0; i < threads; ++i)
      workers_.push_back(std::make_unique<Worker>(i, i == 0 ? fd : clone_fuse_device(fd, mount_point_), share));
  } catch (...) {
    for (size_t i = 1; i < workers_.size(); ++i) ::close(workers_[i]->fd);
    workers_.clear();
    fuse_session_unmount(session_);
    fuse_session_destroy(session_);
    session_ = nullptr;
    throw;
  }
  for (auto& w : workers_) w->device.assign(w->fd);
  drain_timer_.emplace(workers_[0]->io);
  size_timer_.emplace(workers_[0]->io);
}

FuseFrontEnd::~FuseFrontEnd() {
  if (std::any_of(workers_.begin(), workers_.end(), [](const auto& w) { return w->thread.joinable(); })) {
    stop();
    wait();
  }
  drain_timer_.reset();
  size_timer_.reset();
  for (auto& w : workers_) {
    if (w->device.is_open()) w->device.release();
    if (w->index > 0) ::close(w->fd);
  }
  workers_.clear();
  if (session_) {
    fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
}

void FuseFrontEnd::start() {
  for (auto& owned : workers_) {
    Worker& w = *owned;
    w.keep_alive.emplace(asio::make_work_guard(w.io));
    asio::post(w.io, [this, &w] {
      watch_device(w);
      if (w.index == 0) check_sizes();
    });
    w.thread = std::thread([this, &w] {
      // Named for ps -L and /proc/PID/task/*/comm (test_fuse.sh counts them there).
      const std::string name = "volgate-fuse-" + std::to_string(w.index);
      pthread_setname_np(pthread_self(), name.c_str());
      {
        CurrentContextGuard current(w.io);
        this_worker = &w;
        w.io.run();
        this_worker = nullptr;
      }
      stop_deadline_.worker_ended();
    });
  }
}

void FuseFrontEnd::stop() {
  asio::post(workers_[0]->io, [this] { begin_stop(); });
}

bool FuseFrontEnd::wait() {
  std::vector<std::thread*> threads;
  for (auto& w : workers_) threads.push_back(&w->thread);
  if (const size_t left = stop_deadline_.join_or_leave(threads); left > 0) {
    spdlog::error("--fuse {}: {} thread{} still waiting for the storage {} s after the stop began",
                  mount_point_, left, left == 1 ? " is" : "s are", (kDrainTimeout + kInFlightGrace).count());
    storage_unanswered_ = true;
    return false;
  }
  return flushed_;
}

// ---------------------------------------------------------------------------------------------
// The loop: each worker reads its descriptor while it has requests, up to its share of the
// in-flight bound.

void FuseFrontEnd::watch_device(Worker& w) {
  if (w.watching || w.stopping || w.in_flight >= w.max_in_flight) return;
  w.watching = true;
  w.device.async_wait(asio::posix::descriptor_base::wait_read, [this, &w](const boost::system::error_code& ec) {
    w.watching = false;
    if (!ec) receive(w);
  });
}

void FuseFrontEnd::receive(Worker& w) {
  // A batch at a time, so that completions and the stop get their turn on a busy mount.
  for (int batch = 0; batch < 64 && !w.stopping && w.in_flight < w.max_in_flight; ++batch) {
    fuse_buf buf{};
    buf.mem = w.receive_buffer.data();
    buf.size = w.receive_buffer.size();
    const int received = fuse_session_receive_buf(session_, &buf);
    if (received == -EINTR) continue;
    if (received == -EAGAIN) break;
    if (received <= 0) {
      // ENODEV: unmounted from outside (fusermount3 -u) or the connection aborted. Every
      // worker sees it; the first says it.
      if (!went_away_said_.exchange(true))
        spdlog::warn("--fuse {}: the mount went away ({}); FUSE serving ends, NBD goes on", mount_point_,
                     received == 0 ? "unmounted" : std::strerror(-received));
      asio::post(workers_[0]->io, [this] { begin_stop(); });
      return stop_worker(w);
    }
    fuse_session_process_buf(session_, &buf);
  }
  watch_device(w);
}

void FuseFrontEnd::stop_worker(Worker& w) {
  w.stopping = true;
  boost::system::error_code ignored;
  w.device.cancel(ignored);
  check_drained(w);
}

// Tells the first worker once this one has nothing in flight during a stop.
void FuseFrontEnd::check_drained(Worker& w) {
  if (!w.stopping || w.in_flight > 0 || w.drained) return;
  w.drained = true;
  asio::post(workers_[0]->io, [this] {
    if (--undrained_ == 0) flush_all();
  });
}

void FuseFrontEnd::begin_stop() {
  if (stopping_ || finished_) return;
  stopping_ = true;
  stop_deadline_.begin(kDrainTimeout + kInFlightGrace);
  undrained_ = workers_.size();
  drain_timer_->expires_after(kDrainTimeout);
  drain_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || finished_) return;
    if (undrained_ > 0)
      spdlog::warn("--fuse {}: {} thread(s) still have requests in flight after {} s; unmounting anyway",
                   mount_point_, undrained_, kDrainTimeout.count());
    else  // drained, but the storage has not answered the final flush (flush_all)
      spdlog::error("--fuse {}: the final flush did not finish within {} s; unmounting anyway",
                    mount_point_, kDrainTimeout.count());
    finish(false);
  });
  for (auto& owned : workers_) {
    Worker& w = *owned;
    asio::post(w.io, [this, &w] { stop_worker(w); });
  }
}

// Every export's last flush, so that what the files took is on the storage before the mount (and
// perhaps the process) goes.
void FuseFrontEnd::flush_all() {
  if (finished_) return;
  auto list = exports_.all();
  if (list->empty()) return finish(true);
  auto pending = std::make_shared<size_t>(list->size());
  auto ok = std::make_shared<bool>(true);
  for (const auto& e : *list) {
    // Through a front: a read-only device, or one that cannot flush, has nothing to flush.
    backends::DeviceFront(*e->device).flush([this, pending, ok, e](std::error_code ec) {
      if (ec) {
        spdlog::error("--fuse {}: export '{}': final flush failed: {}", mount_point_, e->name, ec.message());
        *ok = false;
      }
      if (--*pending == 0) finish(*ok);
    });
  }
}

void FuseFrontEnd::finish(bool flushed) {
  if (finished_) return;
  finished_ = true;
  flushed_ = flushed;
  drain_timer_->cancel();
  size_timer_->cancel();
  // The other workers let go of their descriptors (closed when the front-end goes) and end.
  for (size_t i = 1; i < workers_.size(); ++i) {
    Worker& w = *workers_[i];
    asio::post(w.io, [&w] {
      boost::system::error_code ignored;
      w.device.cancel(ignored);
      if (w.device.is_open()) w.device.release();
      w.keep_alive.reset();
    });
  }
  Worker& first = *workers_[0];
  boost::system::error_code ignored;
  first.device.cancel(ignored);
  if (first.device.is_open()) first.device.release();  // libfuse closes it
  // As root: umount2(MNT_DETACH); otherwise fusermount3 -u -z. Files still open elsewhere
  // then fail with ENOTCONN instead of holding the mount.
  fuse_session_unmount(session_);
  spdlog::info("--fuse {}: unmounted", mount_point_);
  first.keep_alive.reset();
}

// ---------------------------------------------------------------------------------------------
// Names and attributes

void FuseFrontEnd::on_init(fuse_conn_info* conn) {
  // No page cache (see the header) and no splicing: requests are read into our own buffer.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                  FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE);
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->max_write = kMaxRequestBytes;  // libfuse derives max_pages from it
  conn->max_background = kMaxBackground;
  conn->congestion_threshold = kMaxBackground * 3 / 4;
  spdlog::info("--fuse {}: mounted; requests up to {} KiB, {} in the background, {} thread{}", mount_point_,
               conn->max_write / 1024, kMaxBackground, workers_.size(), workers_.size() == 1 ? "" : "s");
}

uint64_t FuseFrontEnd::inode_of_locked(const std::shared_ptr<const nbd::Export>& e) {
  auto it = inode_by_export_.find(e.get());
  if (it != inode_by_export_.end()) {
    auto node = nodes_.find(it->second);
    // The same address may be a later export's once the first is gone.
    if (node != nodes_.end() && node->second.exported.lock() == e) return it->second;
  }
  const uint64_t ino = next_inode_++;
  nodes_[ino] = Node{e, e->name, 0, e->device->size()};
  inode_by_export_[e.get()] = ino;
  return ino;
}

std::shared_ptr<const nbd::Export> FuseFrontEnd::export_of_locked(uint64_t ino, fuse_file_info* fi) const {
  if (fi && fi->fh) return reinterpret_cast<Handle*>(fi->fh)->view->exported;
  auto node = nodes_.find(ino);
  if (node == nodes_.end()) return nullptr;
  return node->second.exported.lock();
}

void FuseFrontEnd::fill_attributes_locked(uint64_t ino, const nbd::Export* e, struct stat* st) {
  *st = {};
  st->st_ino = ino;
  st->st_uid = uid_;
  st->st_gid = gid_;
  st->st_atim = st->st_mtim = st->st_ctim = mounted_at_;
  if (!e) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return;
  }
  const auto caps = e->device->capabilities();
  const uint64_t size = e->device->size();
  st->st_mode = S_IFREG | (caps.read_only ? 0400 : 0600);
  st->st_nlink = exports_.find(e->name).get() == e ? 1 : 0;  // 0 once removed
  st->st_size = static_cast<off_t>(size);
  st->st_blksize = std::max<uint32_t>(caps.preferred_block_size, caps.min_block_size);
  st->st_blocks = (st->st_size + 511) / 512;
  if (auto node = nodes_.find(ino); node != nodes_.end() && node->second.size != size) {
    node->second.size = size;
    follow_size_locked(*e);
  }
}

void FuseFrontEnd::follow_size_locked(const nbd::Export& e) {
  // Requests see the size the kernel was last told, no older one.
  if (auto view = views_.find(&e); view != views_.end())
    if (auto open = view->second.lock()) open->front.refresh_size();
}

void FuseFrontEnd::fill_entry_locked(uint64_t ino, const nbd::Export& e, fuse_entry_param* entry) {
  *entry = {};
  entry->ino = ino;
  entry->generation = 1;
  fill_attributes_locked(ino, &e, &entry->attr);
  entry->attr_timeout = 0;   // sizes change (volumes grow)
  entry->entry_timeout = 0;  // exports come and go
}

void FuseFrontEnd::on_lookup(fuse_req_t req, uint64_t parent, const char* name) {
  if (parent != kRootInode) return void(fuse_reply_err(req, ENOTDIR));
  auto e = *name ? exports_.find(name) : nullptr;  // the empty name is NBD's default export
  if (!e) return void(fuse_reply_err(req, ENOENT));
  fuse_entry_param entry;
  uint64_t ino;
  {
    std::lock_guard lock(mutex_);
    ino = inode_of_locked(e);
    fill_entry_locked(ino, *e, &entry);
    // Counted before the answer: the kernel may forget it on another thread as soon as it has it.
    ++nodes_[ino].lookups;
  }
  if (fuse_reply_entry(req, &entry) != 0) {
    std::lock_guard lock(mutex_);
    forget_locked(ino, 1);
  }
}

void FuseFrontEnd::on_forget(uint64_t ino, uint64_t count) {
  std::lock_guard lock(mutex_);
  forget_locked(ino, count);
}

void FuseFrontEnd::forget_locked(uint64_t ino, uint64_t count) {
  auto node = nodes_.find(ino);
  if (node == nodes_.end()) return;
  node->second.lookups -= std::min(node->second.lookups, count);
  if (node->second.lookups > 0) return;
  auto by_export = std::find_if(inode_by_export_.begin(), inode_by_export_.end(),
                                [&](const auto& entry) { return entry.second == ino; });
  if (by_export != inode_by_export_.end()) inode_by_export_.erase(by_export);
  nodes_.erase(node);
}

void FuseFrontEnd::on_getattr(fuse_req_t req, uint64_t ino, fuse_file_info* fi) {
  struct stat st;
  {
    std::lock_guard lock(mutex_);
    if (ino == kRootInode) {
      fill_attributes_locked(ino, nullptr, &st);
    } else {
      auto e = export_of_locked(ino, fi);
      if (!e) return void(fuse_reply_err(req, ENOENT));
      fill_attributes_locked(ino, e.get(), &st);
    }
  }
  fuse_reply_attr(req, &st, 0);
}

void FuseFrontEnd::on_setattr(fuse_req_t req, uint64_t ino, const struct stat* attr, int to_set,
                              fuse_file_info* fi) {
  struct stat st;
  {
    std::lock_guard lock(mutex_);
    std::shared_ptr<const nbd::Export> e = ino == kRootInode ? nullptr : export_of_locked(ino, fi);
    if (ino != kRootInode && !e) return void(fuse_reply_err(req, ENOENT));
    // A volume's size is the storage's: truncating it (or growing it) is refused. Owner and
    // mode are fixed too; times are accepted and not kept (touch works).
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
      return void(fuse_reply_err(req, EPERM));
    if ((to_set & FUSE_SET_ATTR_SIZE) && (!e || static_cast<uint64_t>(attr->st_size) != e->device->size()))
      return void(fuse_reply_err(req, EPERM));
    fill_attributes_locked(ino, e.get(), &st);
  }
  fuse_reply_attr(req, &st, 0);
}

// A directory listing, taken once per opendir so that the offsets of one readdir to the next stay
// meaningful while exports come and go.
using Listing = std::vector<std::pair<std::string, uint64_t>>;

void FuseFrontEnd::on_opendir(fuse_req_t req, uint64_t ino, fuse_file_info* fi) {
  if (ino != kRootInode) return void(fuse_reply_err(req, ENOTDIR));
  auto* names = new Listing();
  {
    // Made under the mutex, read under it (readdir may run on another thread).
    std::lock_guard lock(mutex_);
    for (const auto& e : *exports_.all()) {
      if (e->name.size() > 255 || e->name == "." || e->name == "..") continue;  // no file can have that name
      names->emplace_back(e->name, inode_of_locked(e));
    }
  }
  fi->fh = reinterpret_cast<uint64_t>(names);
  if (fuse_reply_open(req, fi) != 0) {
    std::lock_guard lock(mutex_);
    delete names;
  }
}

void FuseFrontEnd::on_readdir(fuse_req_t req, uint64_t, size_t size, off_t off, fuse_file_info* fi) {
  std::vector<char> buffer(size);
  size_t used = 0;
  {
    std::lock_guard lock(mutex_);
    const Listing& names = *reinterpret_cast<const Listing*>(fi->fh);
    // Offsets: 1 after ".", 2 after "..", 3 + i after names[i].
    for (off_t at = off; at < static_cast<off_t>(names.size()) + 2; ++at) {
      struct stat st {};
      const char* name;
      if (at == 0) {
        name = ".", st.st_ino = kRootInode, st.st_mode = S_IFDIR;
      } else if (at == 1) {
        name = "..", st.st_ino = kRootInode, st.st_mode = S_IFDIR;
      } else {
        name = names[at - 2].first.c_str(), st.st_ino = names[at - 2].second, st.st_mode = S_IFREG;
      }
      const size_t need = fuse_add_direntry(req, buffer.data() + used, size - used, name, &st, at + 1);
      if (need > size - used) break;
      used += need;
    }
  }
  fuse_reply_buf(req, buffer.data(), used);
}

void FuseFrontEnd::on_releasedir(fuse_req_t req, uint64_t, fuse_file_info* fi) {
  {
    std::lock_guard lock(mutex_);
    delete reinterpret_cast<Listing*>(fi->fh);
  }
  fuse_reply_err(req, 0);
}

// ---------------------------------------------------------------------------------------------
// Open files

void FuseFrontEnd::on_open(fuse_req_t req, uint64_t ino, fuse_file_info* fi) {
  std::unique_lock lock(mutex_);
  auto node = nodes_.find(ino);
  std::shared_ptr<const nbd::Export> e = node == nodes_.end() ? nullptr : node->second.exported.lock();
  if (!e) return void((lock.unlock(), fuse_reply_err(req, ENOENT)));
  const bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
  if (writable && e->device->capabilities().read_only) return void((lock.unlock(), fuse_reply_err(req, EROFS)));
  if (fi->flags & O_TRUNC) return void((lock.unlock(), fuse_reply_err(req, EPERM)));  // see on_setattr
  // Counted as a connection of the export, like an NBD client: a removal without force is
  // refused while the file is open. False once the export has left the table.
  if (!exports_.attach(*e)) return void((lock.unlock(), fuse_reply_err(req, ENOENT)));
  std::shared_ptr<View> view = views_[e.get()].lock();
  if (!view || view->exported != e) {
    view = std::make_shared<View>(e, backends::ReadModifyWriteDevice::over(e->device));
    views_[e.get()] = view;
  }
  auto* handle = new Handle{view, writable, (fi->flags & O_DSYNC) != 0};
  handles_.insert(handle);
  lock.unlock();
  fi->fh = reinterpret_cast<uint64_t>(handle);
  fi->direct_io = 1;   // no page cache: see the header
  fi->keep_cache = 0;
  fi->noflush = 1;     // close() needs no round trip: fsync is the flush
  if (fuse_reply_open(req, fi) != 0) {
    lock.lock();
    handle->released = true;
    detach_locked(handle);
  }
}

void FuseFrontEnd::on_release(fuse_req_t req, uint64_t, fuse_file_info* fi) {
  {
    std::lock_guard lock(mutex_);
    auto* handle = reinterpret_cast<Handle*>(fi->fh);
    handle->released = true;
    detach_locked(handle);
  }
  fuse_reply_err(req, 0);
}

void FuseFrontEnd::detach_locked(Handle* h) {
  if (h->in_flight > 0) return;
  if (h->attached) {
    h->attached = false;
    exports_.detach(*h->view->exported);
  }
  if (h->released) {
    handles_.erase(h);
    auto it = views_.find(h->view->exported.get());
    delete h;
    if (it != views_.end() && it->second.expired()) views_.erase(it);
  }
}

void FuseFrontEnd::close_clients_of(const nbd::Export& e, bool hard) {
  (void)hard;  // requests in flight are answered either way; open files cannot be closed for their owners
  std::lock_guard lock(mutex_);
  for (Handle* h : std::set<Handle*>(handles_)) {
    if (h->view->exported.get() != &e || h->closed) continue;
    h->closed = true;
    detach_locked(h);
  }
}

FuseFrontEnd::Request* FuseFrontEnd::begin(fuse_req_t req, fuse_file_info* fi, bool writes) {
  Worker& w = *this_worker;
  auto* handle = reinterpret_cast<Handle*>(fi->fh);
  {
    std::lock_guard lock(mutex_);
    if (handle->closed) return fuse_reply_err(req, ENXIO), nullptr;  // its export was removed
    if (writes && (!handle->writable || handle->view->device->capabilities().read_only))
      return fuse_reply_err(req, handle->writable ? EROFS : EBADF), nullptr;
    ++handle->in_flight;
  }
  Request* r;
  if (w.free_requests.empty()) {
    w.all_requests.push_back(std::make_unique<Request>());
    r = w.all_requests.back().get();
    r->self = this;
    r->worker = &w;
  } else {
    r = w.free_requests.back();
    w.free_requests.pop_back();
  }
  r->req = req;
  r->handle = handle;
  ++w.in_flight;
  return r;
}

void FuseFrontEnd::answer_error(Request* r, int error) {
  if (r->kind != nbd::RequestKind::unknown) r->handle->view->exported->counters->failed_errno(r->kind, error);
  fuse_reply_err(r->req, error);
  end(r);
}

void FuseFrontEnd::end(Request* r) {
  Worker& w = *r->worker;
  Handle* h = r->handle;
  r->data = Buffer();
  r->payload = {};
  r->continue_inline = r->calling = false;
  r->kind = nbd::RequestKind::unknown;
  w.free_requests.push_back(r);
  {
    std::lock_guard lock(mutex_);
    if (--h->in_flight == 0 && (h->released || h->closed)) detach_locked(h);
  }
  --w.in_flight;
  if (w.stopping) return check_drained(w);
  watch_device(w);  // it may have stopped at the in-flight bound
}

void FuseFrontEnd::on_read(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi) {
  Request* r = begin(req, fi, false);
  if (!r) return;
  r->kind = nbd::RequestKind::read;
  const uint64_t device_size = r->handle->view->front.size();
  const uint64_t offset = static_cast<uint64_t>(off);
  if (off < 0) return answer_error(r, EINVAL);
  r->offset = offset;
  r->length = offset >= device_size ? 0 : std::min<uint64_t>(size, device_size - offset);
  if (r->length == 0) {  // at or past the end: end of file
    fuse_reply_buf(req, nullptr, 0);
    return end(r);
  }
  r->data = Buffer::allocate(r->length);
  r->handle->view->front.read(offset, r->data.span().first(r->length), [r](std::error_code ec) {
    FuseFrontEnd* self = r->self;
    if (ec) return self->answer_error(r, backends::errno_of(ec));
    r->handle->view->exported->counters->answered(nbd::RequestKind::read, r->length);
    fuse_reply_buf(r->req, reinterpret_cast<const char*>(r->data.data()), r->length);
    self->end(r);
  });
}

void FuseFrontEnd::on_write(fuse_req_t req, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  Request* r = begin(req, fi, true);
  if (!r) return;
  r->kind = nbd::RequestKind::write;
  const uint64_t device_size = r->handle->view->front.size();
  const uint64_t offset = static_cast<uint64_t>(off);
  if (off < 0) return answer_error(r, EINVAL);
  // Like a disk: a write that starts at the end finds no space; one that crosses it is short.
  if (size == 0) {
    fuse_reply_write(req, 0);
    return end(r);
  }
  if (offset >= device_size) return answer_error(r, ENOSPC);
  r->offset = offset;
  r->length = std::min<uint64_t>(size, device_size - offset);
  // The payload sits in the worker's receive buffer, which the next request reuses: a large one
  // takes the buffer along (the next read gets a fresh one from the pool), a small one is copied.
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  Buffer& receive_buffer = r->worker->receive_buffer;
  const bool in_receive_buffer =
      bytes >= receive_buffer.data() && bytes + r->length <= receive_buffer.data() + receive_buffer.size();
  if (in_receive_buffer && r->length >= 256 * 1024) {
    r->data = std::move(receive_buffer);
    receive_buffer = Buffer::allocate(kMaxRequestBytes + 4096);
    r->payload = std::span<const std::byte>(bytes, r->length);
  } else {
    r->data = Buffer::allocate(r->length);
    std::memcpy(r->data.data(), bytes, r->length);
    r->payload = r->data.span().first(r->length);
  }
  r->handle->view->front.write(offset, r->payload, {.fua = r->handle->sync}, [r](std::error_code ec) {
    FuseFrontEnd* self = r->self;
    if (ec) return self->answer_error(r, backends::errno_of(ec));
    r->handle->view->exported->counters->answered(nbd::RequestKind::write, r->length);
    fuse_reply_write(r->req, r->length);
    self->end(r);
  });
}

void FuseFrontEnd::on_fsync(fuse_req_t req, fuse_file_info* fi) {
  Request* r = begin(req, fi, false);
  if (!r) return;
  r->kind = nbd::RequestKind::flush;
  r->handle->view->front.flush([r](std::error_code ec) {
    if (ec) return r->self->answer_error(r, backends::errno_of(ec));
    r->handle->view->exported->counters->answered(nbd::RequestKind::flush, 0);
    fuse_reply_err(r->req, 0);
    r->self->end(r);
  });
}

void FuseFrontEnd::on_fallocate(fuse_req_t req, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  Request* r = begin(req, fi, true);
  if (!r) return;
  r->kind = nbd::RequestKind::write_zeroes;
  const uint64_t device_size = r->handle->view->front.size();
  if (offset < 0 || length <= 0) return answer_error(r, EINVAL);
  const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
  uint64_t start = static_cast<uint64_t>(offset);
  uint64_t end = start + static_cast<uint64_t>(length);
  if (end > device_size) {
    if (!keep_size) return answer_error(r, EFBIG);  // the file cannot grow
    end = device_size;
  }
  backends::ZeroFlags flags;
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    // A punched hole must read back as zeroes (qemu and cp rely on it), which NBD's TRIM does
    // not promise (a LUKS volume's trimmed sectors decrypt to noise): zeroing that may
    // deallocate is the device's hole punch, a trim where zeroes come from it.
    flags.may_trim = true;
  } else if ((mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE) {
    flags.may_trim = false;  // the range stays allocated, as ZERO_RANGE leaves it
  } else {
    // Plain preallocation cannot be promised by thin storage (and every byte is addressable).
    return answer_error(r, EOPNOTSUPP);
  }
  if (start >= end) {
    fuse_reply_err(req, 0);
    return this->end(r);
  }
  r->length = end - start;
  r->handle->view->front.write_zeroes(start, end - start, flags, [r](std::error_code ec) {
    if (ec) return r->self->answer_error(r, backends::errno_of(ec));
    r->handle->view->exported->counters->answered(nbd::RequestKind::write_zeroes, r->length);
    fuse_reply_err(r->req, 0);
    r->self->end(r);
  });
}

void FuseFrontEnd::on_lseek(fuse_req_t req, off_t off, int whence, fuse_file_info* fi) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return void(fuse_reply_err(req, EINVAL));
  Request* r = begin(req, fi, false);
  if (!r) return;
  if (off < 0) return answer_error(r, ENXIO);
  r->offset = static_cast<uint64_t>(off);
  r->whence = whence;
  seek_next(r);
}

// SEEK_DATA/SEEK_HOLE from block status, a step at a time. A hole is what is unallocated and
// reads as zeroes: a LUKS volume's unallocated sectors do not (they decrypt to noise), so they
// are data here, as they must be for qemu-img, which reads holes as zeroes.
void FuseFrontEnd::seek_next(Request* r) {
  backends::DeviceFront& device = r->handle->view->front;
  for (;;) {
    const uint64_t size = device.size();
    if (r->offset >= size) {
      if (r->whence == SEEK_DATA) return answer_error(r, ENXIO);
      fuse_reply_lseek(r->req, static_cast<off_t>(size));
      return end(r);
    }
    if (!device.capabilities().can_block_status) {  // all data
      fuse_reply_lseek(r->req, static_cast<off_t>(r->whence == SEEK_DATA ? r->offset : size));
      return end(r);
    }
    r->calling = true;
    r->continue_inline = false;
    device.block_status(r->offset, std::min(size - r->offset, kSeekStep),
                        [r](std::error_code ec, std::vector<Extent> extents) {
                          FuseFrontEnd* self = r->self;
                          if (ec) return self->answer_error(r, backends::errno_of(ec));
                          for (const Extent& e : extents) {
                            const bool hole = e.hole && e.zero;
                            if (hole == (r->whence == SEEK_HOLE)) {
                              fuse_reply_lseek(r->req, static_cast<off_t>(r->offset));
                              return self->end(r);
                            }
                            r->offset += e.length;
                          }
                          // Not found in this step: the next one, here or in the caller's loop.
                          if (r->calling)
                            r->continue_inline = true;
                          else
                            self->seek_next(r);
                        });
    // end() clears both flags, so a request answered inside the call stops here.
    const bool again = r->continue_inline;
    r->calling = false;
    if (!again) return;
  }
}

// ---------------------------------------------------------------------------------------------

void FuseFrontEnd::check_sizes() {
  if (finished_) return;
  std::vector<uint64_t> changed;
  {
    std::lock_guard lock(mutex_);
    for (auto& [ino, node] : nodes_) {
      auto e = node.exported.lock();
      if (!e) continue;
      const uint64_t size = e->device->size();
      if (size == node.size) continue;
      spdlog::info("--fuse {}: {} is now {} bytes (was {})", mount_point_, node.name, size, node.size);
      node.size = size;
      changed.push_back(ino);
      follow_size_locked(*e);
    }
  }
  // Attributes only (a negative offset): the kernel asks again at the next access.
  for (uint64_t ino : changed) fuse_lowlevel_notify_inval_inode(session_, ino, -1, 0);
  size_timer_->expires_after(kSizeCheckInterval);
  size_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) check_sizes();
  });
}

}  // namespace volgate::gateway
