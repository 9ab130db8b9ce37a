#include "common/unnamed_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace volgate {

UniqueFd create_unnamed_file(int directory_fd, const std::string& what) {
  int fd = ::openat(directory_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "create " + what);
  return UniqueFd(fd);
}

void name_unnamed_file(int fd, int directory_fd, const std::string& name) {
  if (::fsync(fd) != 0) throw std::system_error(errno, std::generic_category(), "write " + name);
  // linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH; the /proc link needs nothing.
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, self.c_str(), directory_fd, name.c_str(), AT_SYMLINK_FOLLOW) != 0)
    throw std::system_error(errno, std::generic_category(), "name " + name);
  // The directory entry is durable too (an O_PATH descriptor cannot be synced: reopen it).
  int dir = ::openat(directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace volgate
