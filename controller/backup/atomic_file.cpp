#include "controller/backup/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <openssl/rand.h>

#include "common/unique_fd.hpp"

namespace volgate::controller {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), what + " " + path);
}

void write_all(int fd, const std::byte* data, size_t length, const std::string& path) {
  while (length > 0) {
    ssize_t n = ::write(fd, data, length);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", path);
    }
    data += n;
    length -= static_cast<size_t>(n);
  }
}

// A random name for a temporary file: never the same as another writer's.
std::string random_name() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("no random bytes for a temporary file name");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

}  // namespace

void sync_directory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) fail("open", dir);
  if (::fsync(fd.get()) != 0) fail("sync", dir);
}

void write_file_atomically(const std::string& temp_dir, const std::string& path,
                           std::span<const std::span<const std::byte>> parts, bool sync_folder) {
  const std::string temp = temp_dir + "/" + random_name();
  try {
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) fail("create", temp);
    for (const auto& part : parts) write_all(fd.get(), part.data(), part.size(), temp);
    if (::fsync(fd.get()) != 0) fail("sync", temp);
    fd.reset();
    if (::rename(temp.c_str(), path.c_str()) != 0) fail("rename to", path);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  if (sync_folder) sync_directory(path.substr(0, path.rfind('/')));
}

std::string read_small_file(const std::string& path, size_t limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) fail("open", path);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) fail("stat", path);
  if (static_cast<uint64_t>(st.st_size) > limit)
    throw std::runtime_error(path + " holds " + std::to_string(st.st_size) + " bytes, more than the " +
                             std::to_string(limit) + " expected");
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd.get(), out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("read", path);
    }
    if (n == 0) break;  // shrank under us: what was read is what there is
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

}  // namespace volgate::controller
