#include "controller/pools/file_pool.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "backends/file_device.hpp"
#include "common/unique_fd.hpp"

namespace volgate::controller {
namespace {

constexpr size_t kCopyChunk = 1 << 20;

[[noreturn]] void fail(const std::string& what, const std::string& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), what + " " + path);
}

void check_id(const std::string& id) {
  if (id.empty() || id.find_first_not_of("0123456789abcdefABCDEF-") != std::string::npos)
    throw std::invalid_argument("not a volume or snapshot id: '" + id + "'");
}

bool all_zero(const std::byte* data, size_t length) {
  for (size_t i = 0; i < length; ++i)
    if (data[i] != std::byte{0}) return false;
  return true;
}

// Sleeps as long as it takes to keep `done` bytes since `start` under `bps`.
void throttle(uint64_t bps, uint64_t done, std::chrono::steady_clock::time_point start) {
  if (bps == 0) return;
  auto due = start + std::chrono::microseconds(done * 1000000 / bps);
  std::this_thread::sleep_until(due);
}

}  // namespace

FilePool::FilePool(PoolConfig config) : config_(std::move(config)) {
  std::error_code ec;
  std::filesystem::create_directories(config_.directory, ec);
  if (ec || !std::filesystem::is_directory(config_.directory))
    throw std::runtime_error("pool '" + config_.name + "': directory " + config_.directory + ": " +
                             (ec ? ec.message() : "not a directory"));
}

std::string FilePool::volume_path(const std::string& volume_id) const {
  check_id(volume_id);
  return config_.directory + "/volume-" + volume_id + ".img";
}

std::string FilePool::snapshot_path(const std::string& snapshot_id) const {
  check_id(snapshot_id);
  return config_.directory + "/snapshot-" + snapshot_id + ".img";
}

PoolCapacity FilePool::capacity() {
  struct statvfs st{};
  if (::statvfs(config_.directory.c_str(), &st) != 0) fail("statvfs", config_.directory);
  return {.total_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize,
          .free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
}

std::map<std::string, std::string> FilePool::capabilities() const {
  std::map<std::string, std::string> caps = config_.capabilities;
  caps["driver"] = "file";
  caps["thin_provisioning_support"] = config_.thin_provisioning ? "true" : "false";
  caps["thick_provisioning_support"] = config_.thin_provisioning ? "false" : "true";
  caps["snapshot_support"] = "true";
  caps["encryption_support"] = "true";
  caps["multiattach"] = "false";
  caps["multipath"] = "false";  // one local path
  return caps;
}

void FilePool::create_volume(const std::string& volume_id, uint64_t bytes) {
  std::string path = volume_path(volume_id);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  if (fd.get() < 0) fail("create", path);
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) fail("size", path);
  // A thick pool hands out real blocks now, so a full filesystem fails the create, not a
  // guest's write later.
  if (!config_.thin_provisioning) {
    int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(bytes));
    if (rc != 0) fail("allocate", path, rc);
  }
}

void FilePool::copy_file(const std::string& source, const std::string& target, uint64_t bytes, bool try_reflink,
                         const CopyProgress& progress) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) fail("open", source);
  copy_from(in.get(), source, target, bytes, try_reflink, progress);
}

void FilePool::copy_from(int in, const std::string& source, const std::string& target, uint64_t bytes,
                         bool try_reflink, const CopyProgress& progress) {
  struct stat st{};
  if (::fstat(in, &st) != 0) fail("stat", source);
  const uint64_t source_size = static_cast<uint64_t>(st.st_size);
  if (bytes < source_size)
    throw std::invalid_argument(source + " holds " + std::to_string(source_size) + " bytes, more than the " +
                                std::to_string(bytes) + " of the new volume");
  UniqueFd out(::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (out.get() < 0) fail("create", target);

  bool cloned = try_reflink && ::ioctl(out.get(), FICLONE, in) == 0;
  if (!cloned) {
    if (::ftruncate(out.get(), static_cast<off_t>(source_size)) != 0) fail("size", target);
    std::vector<std::byte> buffer(kCopyChunk);
    const auto start = std::chrono::steady_clock::now();
    uint64_t copied = 0;  // bytes read so far, for the rate limit
    off_t offset = 0;
    if (progress) progress(0, source_size);
    while (static_cast<uint64_t>(offset) < source_size) {
      // Only the allocated extents are read: holes stay holes in the copy.
      off_t data = ::lseek(in, offset, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // nothing but a hole up to the end
        fail("seek", source);
      }
      off_t hole = ::lseek(in, data, SEEK_HOLE);
      if (hole < 0) fail("seek", source);
      for (off_t at = data; at < hole;) {
        size_t want = static_cast<size_t>(std::min<off_t>(hole - at, static_cast<off_t>(kCopyChunk)));
        ssize_t got = ::pread(in, buffer.data(), want, at);
        if (got < 0) {
          if (errno == EINTR) continue;
          fail("read", source);
        }
        if (got == 0) break;
        if (!all_zero(buffer.data(), static_cast<size_t>(got))) {
          for (ssize_t put = 0; put < got;) {
            ssize_t n = ::pwrite(out.get(), buffer.data() + put, static_cast<size_t>(got - put), at + put);
            if (n < 0) {
              if (errno == EINTR) continue;
              fail("write", target);
            }
            put += n;
          }
        }
        at += got;
        copied += static_cast<uint64_t>(got);
        throttle(config_.copy_bps_limit, copied, start);
        if (progress) progress(static_cast<uint64_t>(at), source_size);
      }
      offset = hole;
    }
    if (progress) progress(source_size, source_size);
  }
  if (bytes > source_size && ::ftruncate(out.get(), static_cast<off_t>(bytes)) != 0) fail("size", target);
  if (!config_.thin_provisioning) {
    int rc = ::posix_fallocate(out.get(), 0, static_cast<off_t>(bytes));
    if (rc != 0) fail("allocate", target, rc);
  }
  if (::fdatasync(out.get()) != 0) fail("sync", target);
}

void FilePool::clone_volume(const std::string& volume_id, const std::string& source_volume_id, uint64_t bytes,
                            const CopyProgress& progress) {
  copy_file(volume_path(source_volume_id), volume_path(volume_id), bytes, true, progress);
}

void FilePool::create_volume_from_snapshot(const std::string& volume_id, const std::string& snapshot_id,
                                           uint64_t bytes, const CopyProgress& progress) {
  copy_file(snapshot_path(snapshot_id), volume_path(volume_id), bytes, true, progress);
}

void FilePool::create_volume_from_file(const std::string& volume_id, int image_fd, uint64_t bytes,
                                       const CopyProgress& progress) {
  copy_from(image_fd, "the image", volume_path(volume_id), bytes, false, progress);
}

void FilePool::resize_volume(const std::string& volume_id, uint64_t bytes) {
  std::string path = volume_path(volume_id);
  if (::truncate(path.c_str(), static_cast<off_t>(bytes)) != 0) fail("resize", path);
  // A thick pool hands out the new blocks now, as create_volume does: a full filesystem fails
  // the extend, not a guest's write later.
  if (!config_.thin_provisioning) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0) fail("open", path);
    if (int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(bytes)); rc != 0) fail("allocate", path, rc);
  }
}

void FilePool::delete_volume(const std::string& volume_id) {
  std::string path = volume_path(volume_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("delete", path);
}

bool FilePool::volume_exists(const std::string& volume_id) {
  return ::access(volume_path(volume_id).c_str(), F_OK) == 0;
}

std::unique_ptr<backends::BlockDevice> FilePool::open_volume(const std::string& volume_id) {
  return backends::FileDevice::open({.path = volume_path(volume_id)});
}

gateway::ExportSpec FilePool::export_spec(const std::string& volume_id) const {
  return {.name = "", .backend = gateway::ExportSpec::Backend::file, .path = volume_path(volume_id)};
}

void FilePool::create_snapshot(const std::string& snapshot_id, const std::string& volume_id,
                               const CopyProgress& progress) {
  std::string source = volume_path(volume_id);
  struct stat st{};
  if (::stat(source.c_str(), &st) != 0) fail("stat", source);
  copy_file(source, snapshot_path(snapshot_id), static_cast<uint64_t>(st.st_size), true, progress);
}

void FilePool::delete_snapshot(const std::string& snapshot_id) {
  std::string path = snapshot_path(snapshot_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("delete", path);
}

std::unique_ptr<VolumeReader> FilePool::read_volume(const std::string& volume_id) {
  return read_volume_file(volume_path(volume_id));
}

std::unique_ptr<VolumeReader> FilePool::read_snapshot(const std::string& snapshot_id) {
  return read_volume_file(snapshot_path(snapshot_id));
}

std::unique_ptr<VolumeWriter> FilePool::overwrite_volume(const std::string& volume_id) {
  const std::string path = volume_path(volume_id);
  auto writer = overwrite_volume_file(path);
  // A thick pool's volume keeps its blocks, as create_volume gave them.
  if (!config_.thin_provisioning) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) fail("open", path);
    int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(writer->size()));
    if (rc != 0) fail("allocate", path, rc);
  }
  return writer;
}

}  // namespace volgate::controller
