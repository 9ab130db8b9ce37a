#include "gateway/fuse_mount_point.hpp"

#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace volgate::gateway {
namespace {

[[noreturn]] void refuse(const std::string& dir, const std::string& why) {
  throw std::invalid_argument("--fuse '" + dir + "': " + why);
}

// mountinfo writes space, tab, newline and backslash in paths as \ooo.
std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out += static_cast<char>(std::strtol(field.substr(i + 1, 3).c_str(), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// The file system type of the topmost mount on `path`, or "" when nothing is mounted there.
std::string mounted_fs_type(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mount_point, field;
    fields >> id >> parent >> device >> root >> mount_point;
    if (unescape_mountinfo(mount_point) != path) continue;
    while (fields >> field && field != "-") {
    }
    std::string type;
    fields >> type;
    found = type;  // later lines are mounted on top of earlier ones
  }
  return found;
}

// `dir` made absolute with its parent's symlinks resolved, without touching `dir` itself (a
// dead mount there fails every stat).
std::string absolute_path(const std::string& dir) {
  std::string trimmed = dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.rfind('/');
  std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : trimmed.substr(0, slash);
  std::string name = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
  char resolved[PATH_MAX];
  if (!::realpath(parent.c_str(), resolved)) refuse(dir, std::string("its parent: ") + std::strerror(errno));
  if (name.empty() || name == "." || name == "..") {
    if (!::realpath(trimmed.c_str(), resolved)) refuse(dir, std::strerror(errno));
    return resolved;
  }
  std::string base = resolved;
  return (base == "/" ? "" : base) + "/" + name;
}

// Detaches a dead FUSE mount: umount2 with MNT_DETACH as root, fusermount3 otherwise.
void detach_stale_mount(const std::string& dir, const std::string& path) {
  if (::umount2(path.c_str(), MNT_DETACH) == 0) return;
  const int umount_error = errno;
  if (umount_error != EPERM) refuse(dir, std::string("cannot detach the dead mount there: ") + std::strerror(umount_error));
  const pid_t child = ::fork();
  if (child == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "-z", "-q", path.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    refuse(dir, "cannot detach the dead mount there (fusermount3 -u -z failed)");
}

}  // namespace

std::string prepare_fuse_mount_point(const std::string& dir) {
  if (dir.empty()) refuse(dir, "empty path");
  const std::string path = absolute_path(dir);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int error = errno;
    if (error != ENOTCONN && error != ECONNABORTED) refuse(dir, std::strerror(error));
    const std::string type = mounted_fs_type(path);
    if (type.rfind("fuse", 0) != 0)
      refuse(dir, std::string(std::strerror(error)) + " (and no FUSE mount is there to clean up)");
    detach_stale_mount(dir, path);
    spdlog::warn("--fuse {}: detached a {} mount whose server is gone (it answered: {})", path, type,
                 std::strerror(error));
    if (::stat(path.c_str(), &st) != 0) refuse(dir, std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) refuse(dir, "not a directory");
  if (mounted_fs_type(path) == kFuseFsType)
    refuse(dir, "a volgate FUSE mount that still answers is there (another volgate serve?)");
  return path;
}

}  // namespace volgate::gateway
