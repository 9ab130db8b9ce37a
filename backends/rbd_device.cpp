#include "backends/rbd_device.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "backends/data_ranges.hpp"
#include "common/current_context.hpp"
#include "common/per_thread_pool.hpp"
#include "common/post_back.hpp"

namespace volgate::backends {

struct RbdDevice::Handles {
  std::shared_ptr<RadosCluster> cluster;  // released last, after the image and pool
  rados_ioctx_t ioctx = nullptr;
  rbd_image_t image = nullptr;

  ~Handles() {
    if (image) rbd_close(image);  // flushes librbd's cache
    if (ioctx) rados_ioctx_destroy(ioctx);
  }
};

namespace {

std::error_code storage_error(ssize_t result) {
  int error = static_cast<int>(-result);
  // NBD (and most front-ends) only know ENOSPC for "the storage is full".
  if (error == EDQUOT || error == EFBIG) error = ENOSPC;
  return errno_code(error);
}

// One librbd request. librbd completes it on its finisher thread; the outcome is posted back
// to the io_context that issued it (common/post_back.hpp), which keeps running until then. Its
// memory, and that of the post, is recycled per thread (common/per_thread_pool.hpp).
struct AioOp {
  rbd_image_t image;
  Completion done;
  PostBack post_back;

  AioOp(rbd_image_t image, boost::asio::io_context& io, Completion done)
      : image(image), done(std::move(done)) {
    post_back.expect(io);
  }

  // `start` hands the completion to one rbd_aio_* call and returns its result.
  template <class Start>
  void submit(Start&& start) {
    rbd_completion_t completion = nullptr;
    int r = rbd_aio_create_completion(this, &AioOp::on_librbd_thread, &completion);
    if (r == 0) {
      r = start(completion);
      if (r < 0) rbd_aio_release(completion);
    }
    if (r < 0) finish(r);  // never queued: complete right here, on the caller's thread
  }

  static void on_librbd_thread(rbd_completion_t completion, void* arg) {
    auto* op = static_cast<AioOp*>(arg);
    ssize_t result = rbd_aio_get_return_value(completion);
    rbd_aio_release(completion);
    op->post_back.post([op, result] { op->finish(result); });
  }

  void finish(ssize_t result) {
    Completion callback = std::move(done);
    PerThreadPool<AioOp>::destroy(this);
    callback(result < 0 ? storage_error(result) : std::error_code{});
  }
};

AioOp* new_op(rbd_image_t image, Completion done) {
  return PerThreadPool<AioOp>::make(image, current_io_context(), std::move(done));
}

std::string image_name(const RbdOptions& o) {
  return o.pool + "/" + (o.rados_namespace ? *o.rados_namespace + "/" : "") + o.image +
         (o.snapshot ? "@" + *o.snapshot : "");
}

// The allocated ranges rbd_diff_iterate2 reports for one block_status call.
struct AllocationScan {
  static constexpr size_t kMaxExtents = 1024;
  std::vector<DataRange> data;

  static int on_extent(uint64_t offset, size_t length, int exists, void* arg) {
    // Without a "from" snapshot every reported extent exists; anything else is a hole.
    if (exists) static_cast<AllocationScan*>(arg)->data.push_back({offset, length});
    return 0;
  }
};

// Opening reads the image header from the OSDs, and librbd waits for them as long as they take.
// At start a gateway should say that they do not answer rather than hang, so the open runs
// asynchronously and is waited for with a deadline.
constexpr auto kOpenTimeout = std::chrono::seconds(10);

struct PendingOpen {
  std::mutex mutex;
  std::condition_variable opened;
  std::optional<int> result;

  static void on_complete(rbd_completion_t completion, void* arg) {
    std::unique_ptr<std::shared_ptr<PendingOpen>> self(static_cast<std::shared_ptr<PendingOpen>*>(arg));
    int r = static_cast<int>(rbd_aio_get_return_value(completion));
    rbd_aio_release(completion);
    std::lock_guard lock((*self)->mutex);
    (*self)->result = r;
    (*self)->opened.notify_all();
  }
};

}  // namespace

// librbd's result for the open (0 or -errno), or nothing when it did not finish in time.
std::optional<int> RbdDevice::open_image(Handles& handles, const std::string& image,
                                         const char* snapshot, bool read_only) {
  auto pending = std::make_shared<PendingOpen>();
  auto* arg = new std::shared_ptr<PendingOpen>(pending);
  rbd_completion_t completion = nullptr;
  int r = rbd_aio_create_completion(arg, &PendingOpen::on_complete, &completion);
  if (r == 0) {
    r = read_only ? rbd_aio_open_read_only(handles.ioctx, image.c_str(), &handles.image, snapshot, completion)
                  : rbd_aio_open(handles.ioctx, image.c_str(), &handles.image, snapshot, completion);
    if (r < 0) rbd_aio_release(completion);
  }
  if (r < 0) {
    delete arg;
    handles.image = nullptr;
    return r;
  }
  std::unique_lock lock(pending->mutex);
  if (!pending->opened.wait_for(lock, kOpenTimeout, [&] { return pending->result.has_value(); }))
    return std::nullopt;
  if (*pending->result < 0) handles.image = nullptr;  // librbd freed it
  return *pending->result;
}

void RbdDevice::abandon(std::unique_ptr<Handles> handles) {
  static auto* abandoned = new std::vector<std::unique_ptr<Handles>>();
  handles->image = nullptr;  // not ours until the open completes, and nobody waits for that
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  abandoned->push_back(std::move(handles));
}

std::unique_ptr<RbdDevice> RbdDevice::open(const RbdOptions& options) {
  const std::string name = image_name(options);
  auto fail = [&](const std::string& why) -> std::runtime_error {
    return std::runtime_error("rbd " + name + ": " + why);
  };
  auto handles = std::make_unique<Handles>();
  try {
    handles->cluster = RadosCluster::connect(options);
  } catch (const std::exception& e) {
    throw fail(e.what());
  }
  int r = rados_ioctx_create(handles->cluster->handle(), options.pool.c_str(), &handles->ioctx);
  if (r < 0) {
    handles->ioctx = nullptr;
    throw fail(r == -ENOENT ? "pool '" + options.pool + "' does not exist"
                            : "cannot open pool '" + options.pool + "': " + std::strerror(-r));
  }
  if (options.rados_namespace) rados_ioctx_set_namespace(handles->ioctx, options.rados_namespace->c_str());
  const char* snapshot = options.snapshot ? options.snapshot->c_str() : nullptr;
  auto opened = open_image(*handles, options.image, snapshot, options.read_only || snapshot);
  if (!opened) {
    // librbd still works on the open and will use the pool and the connection when it ends:
    // they must outlive us, so they are handed to a list that is never freed.
    abandon(std::move(handles));
    throw fail("the OSDs did not answer within " + std::to_string(kOpenTimeout.count()) +
               " s while opening the image (are they up?)");
  }
  r = *opened;
  if (r < 0) {
    if (r == -ENOENT)
      throw fail(snapshot ? "no such image or snapshot in pool '" + options.pool + "'"
                          : "no such image in pool '" + options.pool + "'");
    throw fail(std::string("cannot open the image: ") + std::strerror(-r));
  }
  uint64_t size = 0;
  if (r = rbd_get_size(handles->image, &size); r < 0)
    throw fail(std::string("cannot read the image size: ") + std::strerror(-r));

  std::unique_ptr<RbdDevice> device(new RbdDevice(std::move(handles), options, size));
  uint64_t watch = 0;
  if (r = rbd_update_watch(device->handles_->image, &watch, &RbdDevice::on_image_updated, device.get());
      r < 0)
    throw fail(std::string("cannot watch the image header for resizes: ") + std::strerror(-r));
  device->watch_handle_ = watch;
  return device;
}

RbdDevice::RbdDevice(std::unique_ptr<Handles> handles, RbdOptions options, uint64_t size)
    : handles_(std::move(handles)), options_(std::move(options)), size_(size) {}

RbdDevice::~RbdDevice() {
  lookups_.join();
  if (watch_handle_) rbd_update_unwatch(handles_->image, *watch_handle_);
}

// librbd calls this (on its own thread) when the image header changes, e.g. after `rbd resize`.
// New connections then see the new size; open ones keep the size they negotiated.
void RbdDevice::on_image_updated(void* self) {
  auto* device = static_cast<RbdDevice*>(self);
  uint64_t size = 0;
  if (rbd_get_size(device->handles_->image, &size) == 0)
    device->size_.store(size, std::memory_order_release);
}

DeviceCapabilities RbdDevice::capabilities() const {
  DeviceCapabilities caps;
  const bool w = writable();
  caps.read_only = !w;
  caps.can_trim = w;
  caps.can_zero = w;
  caps.can_fast_zero = w;  // zeroing is done by the OSDs: no data is ever sent
  // librbd's cache may acknowledge a write before the OSDs have it, and only a flush waits for
  // them: FUA is a write and a flush, which the device front does.
  caps.can_fua = false;
  caps.can_flush = true;
  caps.can_block_status = true;
  caps.can_multi_conn = true;  // one image handle, one cache for every connection
  caps.min_block_size = 1;
  caps.preferred_block_size = 4096;
  return caps;
}

std::string RbdDevice::description() const {
  return "rbd " + image_name(options_) + (writable() ? "" : " (read-only)");
}

void RbdDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  new_op(handles_->image, std::move(done))->submit([&](rbd_completion_t c) {
    return rbd_aio_read(handles_->image, offset, data.size(), reinterpret_cast<char*>(data.data()), c);
  });
}

void RbdDevice::write(uint64_t offset, std::span<const std::byte> data, WriteFlags,
                      Completion done) {
  new_op(handles_->image, std::move(done))->submit([&](rbd_completion_t c) {
    return rbd_aio_write(handles_->image, offset, data.size(), reinterpret_cast<const char*>(data.data()), c);
  });
}

void RbdDevice::flush(Completion done) {
  new_op(handles_->image, std::move(done))->submit([&](rbd_completion_t c) {
    return rbd_aio_flush(handles_->image, c);
  });
}

void RbdDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  new_op(handles_->image, std::move(done))->submit([&](rbd_completion_t c) {
    return rbd_aio_discard(handles_->image, offset, length, c);
  });
}

void RbdDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags, Completion done) {
  // Always fast (the OSDs zero or deallocate), so fast_only needs no special case. Without
  // may_trim the zeroed range stays allocated.
  const int zero_flags = flags.may_trim ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
  new_op(handles_->image, std::move(done))->submit([&](rbd_completion_t c) {
    return rbd_aio_write_zeroes(handles_->image, offset, length, c, zero_flags, 0);
  });
}

void RbdDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  length = std::min(length, kMaxBlockStatusBytes);
  boost::asio::io_context& io = current_io_context();
  auto busy = boost::asio::make_work_guard(io);
  // rbd_diff_iterate2 waits for the OSDs: never on an I/O thread.
  boost::asio::post(lookups_, [this, offset, length, done = std::move(done), &io, busy]() mutable {
    AllocationScan scan;
    int r = rbd_diff_iterate2(handles_->image, nullptr, offset, length, /*include_parent=*/1,
                              /*whole_object=*/0, &AllocationScan::on_extent, &scan);
    std::error_code ec;
    std::vector<Extent> extents;
    if (r < 0)
      ec = storage_error(r);
    else
      extents = extents_from_data(offset, offset + length, std::move(scan.data), AllocationScan::kMaxExtents);
    boost::asio::post(io, [done = std::move(done), ec, extents = std::move(extents), busy]() mutable {
      done(ec, std::move(extents));
    });
  });
}

}  // namespace volgate::backends
