#include "controller/pools/volume_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "common/unique_fd.hpp"

namespace volgate::controller {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), what + " " + path);
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) fail("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

class FileVolumeReader final : public VolumeReader {
 public:
  explicit FileVolumeReader(const std::string& path)
      : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (!fd_) fail("open", path);
    size_ = file_size(fd_.get(), path);
  }
  uint64_t size() const override { return size_; }
  bool may_hold_data(uint64_t offset, uint64_t length) override {
    off_t data = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) return errno != ENXIO;  // ENXIO: only a hole up to the end
    return static_cast<uint64_t>(data) < offset + length;
  }
  void read(uint64_t offset, std::span<std::byte> out) override {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("read", path_);
      }
      if (n == 0) fail("read (the file ended early)", path_, EIO);
      done += static_cast<size_t>(n);
    }
  }

 private:
  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

class FileVolumeWriter final : public VolumeWriter {
 public:
  explicit FileVolumeWriter(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_WRONLY | O_CLOEXEC)) {
    if (!fd_) fail("open", path);
    size_ = file_size(fd_.get(), path);
    // Cut to nothing and back: the old data goes, the size stays, and the file is all holes.
    if (::ftruncate(fd_.get(), 0) != 0 || ::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) fail("clear", path);
  }
  uint64_t size() const override { return size_; }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write", path_);
      }
      done += static_cast<size_t>(n);
    }
  }
  void finish() override {
    if (::fdatasync(fd_.get()) != 0) fail("sync", path_);
  }

 private:
  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

}  // namespace

std::unique_ptr<VolumeReader> read_volume_file(const std::string& path) {
  return std::make_unique<FileVolumeReader>(path);
}

std::unique_ptr<VolumeWriter> overwrite_volume_file(const std::string& path) {
  return std::make_unique<FileVolumeWriter>(path);
}

}  // namespace volgate::controller
