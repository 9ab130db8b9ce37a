#pragma once
// `volgate serve --fuse DIR`: every export as a regular file DIR/NAME of the export's size,
// through libfuse3's low-level API, on the same device stack the NBD server uses.
//
// Threads: a few (--fuse-threads, default min(4, cores)), each with an io_context and a /dev/fuse
// descriptor of its own: the first thread has the mount's, the others a clone of it
// (FUSE_DEV_IOC_CLONE, as libfuse's multi-threaded loop makes with clone_fd). The kernel hands
// each request to whichever descriptor reads it first and takes its answer only on that same
// descriptor. Each thread reads its descriptor (non-blocking, watched by its io_context), calls
// the device, and returns to reading; the device's completion comes back on that same thread
// (its io_context is the current one there) and answers the request. So many requests are in
// flight at once (up to kMaxRequestsInFlight over all threads), no request changes thread, and
// none waits on another. libfuse answers through the session, whose descriptor is the first
// thread's: a custom I/O (fuse_session_custom_io) sends what a thread answers to that thread's
// descriptor. libfuse's own multi-threaded loop was not used: its threads each block in read()
// for one request, so every request would have to go to an io_context and back. One thread
// sufficed while the work that needs CPU ran elsewhere (AES-XTS on the LUKS helper threads,
// storage I/O in io_uring); copying 1 MiB requests in and out of /dev/fuse is FUSE's own share,
// and on sequential reads it saturated one thread.
//
// Shared state (the names, the open files and their requests in flight) is under one mutex,
// taken twice per read or write and never across a device call.
//
// Caching: files are opened direct_io, so the kernel keeps no page cache of them and every read
// and write reaches the device. Data written through NBD (or any other front-end) to the same
// export is therefore seen by the next read of the file; invalidating cached pages instead
// would need every writer of every front-end to tell this one what it wrote. O_DIRECT opens
// work the same way. Attributes and names are not cached either (timeouts 0), so a size change
// and exports added or removed through the control API show at the next stat or lookup.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/device_front.hpp"
#include "common/buffer_pool.hpp"
#include "common/stop_deadline.hpp"
#include "gateway/export_clients.hpp"
#include "nbd/export.hpp"

struct fuse_session;
struct fuse_req;
struct fuse_conn_info;
struct fuse_file_info;
struct fuse_entry_param;

namespace volgate::gateway {

class FuseFrontEnd final : public ExportClients {
 public:
  // Requests read from the kernel and not answered yet, over all threads (each gets its share);
  // beyond it a thread does not read its descriptor until one is answered. With 1 MiB requests
  // this bounds the buffers to 256 MiB.
  static constexpr size_t kMaxRequestsInFlight = 256;
  static constexpr unsigned kMaxThreads = 64;
  // --fuse-threads by default: min(4, cores).
  static unsigned default_threads();
  // The largest read or write the kernel sends (its maximum: 256 pages).
  static constexpr uint32_t kMaxRequestBytes = 1024 * 1024;
  // At a stop, how long requests in flight may take before the mount goes anyway.
  static constexpr std::chrono::seconds kDrainTimeout{10};
  // And then how long a thread may still wait for its storage before it is left running (see
  // common/stop_deadline.hpp).
  static constexpr std::chrono::seconds kInFlightGrace = StopDeadline::kDefaultGrace;

  // Mounts `mount_point` (an absolute path, see prepare_fuse_mount_point) and serves the
  // exports of `exports` there, as the table holds them at each lookup, on `threads` threads
  // (1 to kMaxThreads). Throws std::runtime_error naming the directory when mounting fails.
  // Nothing is served until start().
  FuseFrontEnd(const nbd::ExportTable& exports, std::string mount_point, unsigned threads);
  ~FuseFrontEnd() override;
  FuseFrontEnd(const FuseFrontEnd&) = delete;
  FuseFrontEnd& operator=(const FuseFrontEnd&) = delete;

  const std::string& mount_point() const { return mount_point_; }
  void start();
  // From any thread: stops reading requests, lets those in flight finish, flushes every
  // export and unmounts. Accesses after that fail (ENOTCONN) or find an empty directory.
  void stop();
  // Waits until the stop has unmounted; false if a final flush failed or a thread still waited
  // for its storage kInFlightGrace after the drain.
  bool wait();
  // After wait(): threads were left waiting for a storage that does not answer; they use this
  // object, so the process must end (std::_Exit) rather than destroy it.
  bool storage_unanswered() const { return storage_unanswered_; }
  void close_clients_of(const nbd::Export& e, bool hard) override;

  // libfuse's callbacks (fuse_lowlevel_ops), and one serving thread; public for the .cpp only.
  struct Ops;
  struct Worker;

 private:
  // What a file of the directory stands for: an export, held weakly (a removed export must not
  // be kept open by a name the kernel still remembers).
  struct Node {
    std::weak_ptr<const nbd::Export> exported;
    std::string name;
    uint64_t lookups = 0;  // the kernel's references (lookup minus forget)
    uint64_t size = 0;     // last reported
  };
  // The device as the files of one export see it: byte-addressed (read-modify-write over
  // block-aligned devices such as LUKS), shared by every open file of the export so that their
  // partial-block writes lock each other out.
  struct View {
    View(std::shared_ptr<const nbd::Export> e, std::shared_ptr<backends::BlockDevice> d)
        : exported(std::move(e)), device(std::move(d)), front(*device) {}
    std::shared_ptr<const nbd::Export> exported;
    std::shared_ptr<backends::BlockDevice> device;
    backends::DeviceFront front;  // every request goes through it; its size follows check_sizes()
  };
  // What the kernel opened. view, writable and sync never change; the rest is under mutex_.
  struct Handle {
    std::shared_ptr<View> view;
    bool writable = false;
    bool sync = false;        // opened O_SYNC/O_DSYNC: writes are FUA
    bool attached = true;     // counted in the export's connections
    bool closed = false;      // its export was removed with force: requests fail with ENXIO
    bool released = false;    // the kernel released it; freed when nothing is in flight
    uint32_t in_flight = 0;
  };
  struct Request;

  void on_init(fuse_conn_info* conn);
  void on_lookup(fuse_req* req, uint64_t parent, const char* name);
  void on_forget(uint64_t ino, uint64_t count);
  void on_getattr(fuse_req* req, uint64_t ino, fuse_file_info* fi);
  void on_setattr(fuse_req* req, uint64_t ino, const struct stat* attr, int to_set, fuse_file_info* fi);
  void on_opendir(fuse_req* req, uint64_t ino, fuse_file_info* fi);
  void on_readdir(fuse_req* req, uint64_t ino, size_t size, off_t off, fuse_file_info* fi);
  void on_releasedir(fuse_req* req, uint64_t ino, fuse_file_info* fi);
  void on_open(fuse_req* req, uint64_t ino, fuse_file_info* fi);
  void on_release(fuse_req* req, uint64_t ino, fuse_file_info* fi);
  void on_read(fuse_req* req, size_t size, off_t off, fuse_file_info* fi);
  void on_write(fuse_req* req, const char* data, size_t size, off_t off, fuse_file_info* fi);
  void on_fsync(fuse_req* req, fuse_file_info* fi);
  void on_fallocate(fuse_req* req, int mode, off_t offset, off_t length, fuse_file_info* fi);
  void on_lseek(fuse_req* req, off_t off, int whence, fuse_file_info* fi);

  // With mutex_ held (the _locked ones):
  // The export behind `ino`, if it is still served (or still open through `fi`).
  std::shared_ptr<const nbd::Export> export_of_locked(uint64_t ino, fuse_file_info* fi) const;
  // The inode of `e`, made when first seen.
  uint64_t inode_of_locked(const std::shared_ptr<const nbd::Export>& e);
  void fill_attributes_locked(uint64_t ino, const nbd::Export* e, struct stat* st);
  // The open files of `e` take the size the kernel is told (their DeviceFront's).
  void follow_size_locked(const nbd::Export& e);
  void fill_entry_locked(uint64_t ino, const nbd::Export& e, fuse_entry_param* entry);
  // Stops counting `h` among its export's connections once nothing of it is in flight, and
  // frees it once the kernel released it too.
  void detach_locked(Handle* h);
  void forget_locked(uint64_t ino, uint64_t count);

  // On the calling worker's thread: starts a request on the file of `fi`; null (and the request
  // answered) if it cannot go on.
  Request* begin(fuse_req* req, fuse_file_info* fi, bool writes);
  void answer_error(Request* r, int error);
  void end(Request* r);
  void seek_next(Request* r);

  // Each worker on its own thread:
  void watch_device(Worker& w);
  void receive(Worker& w);
  void stop_worker(Worker& w);
  void check_drained(Worker& w);
  // On the first worker's thread, which runs the stop:
  void begin_stop();
  void flush_all();
  void finish(bool flushed);
  // Tells the kernel to forget the attributes of files whose export changed size.
  void check_sizes();

  const nbd::ExportTable& exports_;
  const std::string mount_point_;
  fuse_session* session_ = nullptr;
  const struct timespec mounted_at_;
  const uid_t uid_;
  const gid_t gid_;
  std::vector<std::unique_ptr<Worker>> workers_;  // [0] has the session's descriptor and runs the stop

  // On the first worker's thread:
  std::optional<boost::asio::steady_timer> drain_timer_;
  std::optional<boost::asio::steady_timer> size_timer_;
  bool stopping_ = false;
  bool finished_ = false;
  size_t undrained_ = 0;  // workers with requests still in flight during a stop
  bool flushed_ = true;   // read by wait() after every thread ended
  bool storage_unanswered_ = false;  // set by wait()
  StopDeadline stop_deadline_;       // how long wait() waits for the threads once stopping
  std::atomic<bool> went_away_said_{false};

  std::mutex mutex_;
  std::unordered_map<uint64_t, Node> nodes_;
  std::map<const nbd::Export*, uint64_t> inode_by_export_;
  uint64_t next_inode_ = 2;  // 1 is the directory
  std::map<const nbd::Export*, std::weak_ptr<View>> views_;
  std::set<Handle*> handles_;
};

}  // namespace volgate::gateway
