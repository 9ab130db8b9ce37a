#include "backends/file_device.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "backends/io_uring_queue.hpp"
#include "common/per_thread_pool.hpp"
#include "common/size.hpp"

namespace volgate::backends {
namespace {

std::error_code storage_error(int error) {
  // NBD (and most front-ends) only know ENOSPC for "the storage is full".
  if (error == EDQUOT || error == EFBIG) error = ENOSPC;
  return errno_code(error);
}

// One in-flight file operation: a small state machine that resubmits short transfers and can
// chain an fdatasync for FUA. Its memory is recycled per thread (common/per_thread_pool.hpp), so
// the data path does not allocate.
class FileOp final : public IoUringQueue::Operation {
 public:
  enum class Kind { read, write, fsync, fallocate };

  int fd = -1;
  Kind kind = Kind::read;
  uint64_t offset = 0;
  std::byte* data = nullptr;
  uint64_t remaining = 0;
  int rw_flags = 0;
  int fallocate_mode = 0;
  bool sync_after = false;     // FUA without RWF_DSYNC: fdatasync once the main step is done
  bool ignore_unsupported = false;  // trim is advisory: EOPNOTSUPP means "done"
  Completion done;

  void start() {
    IoUringQueue::for_current_thread().submit(this, [this](io_uring_sqe* sqe) { prepare(sqe); });
  }

  void on_complete(int result) override {
    if (result < 0) {
      int error = -result;
      if (error == EINTR || error == EAGAIN) return start();
      // An advisory trim is done; a zeroing answers ENOTSUP, and the front writes the zeroes.
      if ((error == EOPNOTSUPP || error == ENOTSUP) && kind == Kind::fallocate)
        return ignore_unsupported ? step_done() : finish(errno_code(ENOTSUP));
      return finish(storage_error(error));
    }
    switch (kind) {
      case Kind::read:
      case Kind::write: {
        if (result == 0) return finish(errno_code(EIO));  // the file shrank under us
        auto n = static_cast<uint64_t>(result);
        offset += n;
        remaining -= n;
        data += n;
        if (remaining > 0) return start();
        return step_done();
      }
      case Kind::fsync:
        return finish({});
      case Kind::fallocate:
        return step_done();
    }
  }

 private:
  void prepare(io_uring_sqe* sqe) {
    switch (kind) {
      case Kind::read:
        io_uring_prep_read(sqe, fd, data, static_cast<unsigned>(remaining), offset);
        break;
      case Kind::write:
        io_uring_prep_write(sqe, fd, data, static_cast<unsigned>(remaining), offset);
        sqe->rw_flags = rw_flags;
        break;
      case Kind::fsync:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
      case Kind::fallocate:
        io_uring_prep_fallocate(sqe, fd, fallocate_mode, offset, remaining);
        break;
    }
  }

  void step_done() {
    if (sync_after) {
      sync_after = false;
      kind = Kind::fsync;
      return start();
    }
    finish({});
  }

  void finish(std::error_code ec) {
    Completion callback = std::move(done);
    PerThreadPool<FileOp>::destroy(this);
    callback(ec);
  }
};

FileOp* new_op(int fd, FileOp::Kind kind, uint64_t offset, uint64_t length, Completion done) {
  FileOp* op = PerThreadPool<FileOp>::make();
  op->fd = fd;
  op->kind = kind;
  op->offset = offset;
  op->remaining = length;
  op->done = std::move(done);
  return op;
}

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

}  // namespace

std::unique_ptr<FileDevice> FileDevice::open(const FileOptions& options) {
  int flags = O_CLOEXEC | (options.read_only ? O_RDONLY : O_RDWR);
  if (options.direct) flags |= O_DIRECT;
  if (options.create_size) {
    if (options.read_only) throw std::invalid_argument("size= cannot be combined with readonly");
    flags |= O_CREAT;
  }
  int fd = ::open(options.path.c_str(), flags, 0644);
  if (fd < 0) throw_errno(errno, options.path);

  struct stat st {};
  if (::fstat(fd, &st) < 0) {
    int error = errno;
    ::close(fd);
    throw_errno(error, options.path);
  }
  bool is_block = S_ISBLK(st.st_mode);
  if (!is_block && !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::invalid_argument(options.path + ": not a regular file or block device");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (is_block && ::ioctl(fd, BLKGETSIZE64, &size) < 0) {
    int error = errno;
    ::close(fd);
    throw_errno(error, options.path);
  }
  if (options.create_size && *options.create_size != size) {
    if (is_block || *options.create_size < size) {
      ::close(fd);
      throw std::invalid_argument(options.path + " is " + format_size(size) + ", larger than size=" +
                                  format_size(*options.create_size) + "; refusing to shrink it");
    }
    if (::ftruncate(fd, static_cast<off_t>(*options.create_size)) < 0) {
      int error = errno;
      ::close(fd);
      throw_errno(error, options.path + ": growing to " + format_size(*options.create_size));
    }
    size = *options.create_size;
  }
  if (size == 0) {
    ::close(fd);
    throw std::invalid_argument(options.path + " is empty; give size= to grow it");
  }
  if (options.direct && size % kDirectAlignment != 0) {
    ::close(fd);
    throw std::invalid_argument(options.path + ": direct needs a size that is a multiple of " +
                                std::to_string(kDirectAlignment));
  }
  InlineIo inline_io = InlineIo::cached_only;
  struct statfs fs {};
  if (options.direct)
    inline_io = InlineIo::never;
  // A device node's own filesystem (devtmpfs) says nothing about the device behind it.
  else if (!is_block && ::fstatfs(fd, &fs) == 0 &&
           (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC))
    inline_io = InlineIo::always;
  return std::unique_ptr<FileDevice>(new FileDevice(fd, size, options, is_block, inline_io));
}

FileDevice::FileDevice(int fd, uint64_t size, FileOptions options, bool is_block_device,
                       InlineIo inline_io)
    : fd_(fd),
      size_(size),
      options_(std::move(options)),
      is_block_device_(is_block_device),
      inline_io_(inline_io) {}

FileDevice::~FileDevice() { ::close(fd_); }

DeviceCapabilities FileDevice::capabilities() const {
  DeviceCapabilities caps;
  bool writable = !options_.read_only;
  caps.read_only = options_.read_only;
  caps.can_trim = writable;
  caps.can_zero = writable;
  caps.can_fast_zero = writable;
  caps.can_fua = writable;
  caps.can_cache = !options_.direct;
  caps.can_block_status = !is_block_device_;
  caps.can_multi_conn = true;
  caps.writes_shared_at_once = true;  // the kernel's page cache (or the disk, with direct)
  caps.fast_completions = true;
  // On a disk filesystem these last until it first answers RWF_NOWAIT with EOPNOTSUPP (ext4
  // does for buffered writes); tmpfs never waits for a device, so it needs no RWF_NOWAIT.
  const bool always = inline_io_ == InlineIo::always;
  const bool nowait = inline_io_ == InlineIo::cached_only;
  caps.can_read_cached = always || (nowait && nowait_reads_.load(std::memory_order_relaxed));
  caps.can_write_cached =
      writable && (always || (nowait && nowait_writes_.load(std::memory_order_relaxed)));
  caps.min_block_size = options_.direct ? kDirectAlignment : 1;
  caps.preferred_block_size = 4096;
  return caps;
}

std::string FileDevice::description() const {
  return std::string(is_block_device_ ? "block device " : "file ") + options_.path +
         (options_.direct ? " (direct)" : "");
}

// Moves as much of a transfer as inline_io_ allows with plain syscalls and returns the bytes
// moved. io_uring takes the rest, and with it any error, which it reports the usual way.
uint64_t FileDevice::transfer_inline(bool write, uint64_t offset, std::byte* data,
                                     uint64_t length, int rw_flags) {
  if (inline_io_ == InlineIo::never) return 0;
  const bool cached_only = inline_io_ == InlineIo::cached_only;
  std::atomic<bool>& nowait_supported = write ? nowait_writes_ : nowait_reads_;
  if (cached_only) {
    // A durable write must wait for the device by definition.
    if ((rw_flags & RWF_DSYNC) || !nowait_supported.load(std::memory_order_relaxed)) return 0;
    rw_flags |= RWF_NOWAIT;
  }
  uint64_t moved = 0;
  while (moved < length) {
    iovec iov{data + moved, static_cast<size_t>(length - moved)};
    auto at = static_cast<off_t>(offset + moved);
    ssize_t n = write ? ::pwritev2(fd_, &iov, 1, at, rw_flags) : ::preadv2(fd_, &iov, 1, at, rw_flags);
    if (n > 0) {
      moved += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EOPNOTSUPP && cached_only)
      nowait_supported.store(false, std::memory_order_relaxed);
    break;  // EAGAIN (not cached), end of file, or an error: the ring's turn
  }
  return moved;
}

void FileDevice::read(uint64_t offset, std::span<std::byte> data, Completion done) {
  uint64_t moved = transfer_inline(false, offset, data.data(), data.size(), 0);
  if (moved == data.size()) return done({});
  FileOp* op = new_op(fd_, FileOp::Kind::read, offset + moved, data.size() - moved, std::move(done));
  op->data = data.data() + moved;
  op->start();
}

void FileDevice::write(uint64_t offset, std::span<const std::byte> data, WriteFlags flags,
                       Completion done) {
  auto* bytes = const_cast<std::byte*>(data.data());  // only ever passed to write(2)
  const int rw_flags = flags.fua ? RWF_DSYNC : 0;
  uint64_t moved = data.size() <= kInlineWriteLimit
                       ? transfer_inline(true, offset, bytes, data.size(), rw_flags)
                       : 0;
  if (moved == data.size()) return done({});
  FileOp* op = new_op(fd_, FileOp::Kind::write, offset + moved, data.size() - moved, std::move(done));
  op->data = bytes + moved;
  op->rw_flags = rw_flags;
  op->start();
}

uint64_t FileDevice::read_cached(uint64_t offset, std::span<std::byte> data) {
  return transfer_inline(false, offset, data.data(), data.size(), 0);
}

uint64_t FileDevice::write_cached(uint64_t offset, std::span<const std::byte> data) {
  if (options_.read_only) return 0;
  auto* bytes = const_cast<std::byte*>(data.data());  // only ever passed to write(2)
  return transfer_inline(true, offset, bytes, data.size(), 0);
}

void FileDevice::flush(Completion done) {
  new_op(fd_, FileOp::Kind::fsync, 0, 0, std::move(done))->start();
}

void FileDevice::trim(uint64_t offset, uint64_t length, Completion done) {
  FileOp* op = new_op(fd_, FileOp::Kind::fallocate, offset, length, std::move(done));
  op->fallocate_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  op->ignore_unsupported = true;
  op->start();
}

void FileDevice::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags,
                              Completion done) {
  FileOp* op = new_op(fd_, FileOp::Kind::fallocate, offset, length, std::move(done));
  // A punched hole reads as zeroes and frees space; ZERO_RANGE keeps the blocks allocated.
  op->fallocate_mode = (flags.may_trim ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) |
                       FALLOC_FL_KEEP_SIZE;
  op->sync_after = flags.fua;
  op->start();
}

void FileDevice::block_status(uint64_t offset, uint64_t length, ExtentsCompletion done) {
  std::vector<Extent> extents;
  const uint64_t end = offset + length;
  // lseek(SEEK_DATA/SEEK_HOLE) is a metadata lookup that does not wait for data I/O, so it runs
  // inline. A cap on extents bounds the reply; the client asks again for the rest.
  constexpr size_t kMaxExtents = 1024;
  uint64_t pos = offset;
  while (pos < end && extents.size() < kMaxExtents) {
    off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) {  // no data from here to the end of the file
        extents.push_back({end - pos, true, true});
        break;
      }
      // Allocation unknown: report data, which is always a correct answer.
      extents.push_back({end - pos, false, false});
      break;
    }
    auto data_start = static_cast<uint64_t>(data);
    if (data_start > pos) {
      uint64_t hole_end = std::min(data_start, end);
      extents.push_back({hole_end - pos, true, true});
      pos = hole_end;
      continue;
    }
    off_t hole = ::lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
    uint64_t data_end = hole < 0 ? end : std::min(static_cast<uint64_t>(hole), end);
    if (data_end <= pos) data_end = end;
    extents.push_back({data_end - pos, false, false});
    pos = data_end;
  }
  done({}, std::move(extents));
}

void FileDevice::cache(uint64_t offset, uint64_t length, Completion done) {
  if (!options_.direct)
    ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                    POSIX_FADV_WILLNEED);
  done({});
}

std::error_code FileDevice::flush_now() {
  if (options_.read_only) return {};
  return ::fdatasync(fd_) == 0 ? std::error_code{} : errno_code(errno);
}

}  // namespace volgate::backends
