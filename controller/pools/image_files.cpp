#include "controller/pools/image_files.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/untrusted_json.hpp"
#include "controller/api/api_error.hpp"
#include "controller/pools/image_uploads.hpp"

namespace volgate::controller {
namespace {

// O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused by fstat right after.
constexpr int kImageOpenFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW;

[[noreturn]] void not_an_image(const std::string& reference) {
  bad_request("imageRef '" + reference + "' is not a readable regular file in the controller's image directories.");
}

// The path below `directory` that `reference` names, or nullopt when it names nothing there.
std::optional<std::string> relative_to(const std::string& directory, const std::string& reference) {
  if (reference.compare(0, directory.size(), directory) != 0) return std::nullopt;
  if (reference.size() == directory.size() || reference[directory.size()] != '/') return std::nullopt;
  return reference.substr(directory.size() + 1);
}

// The same resolution as openat2's RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, one component at a
// time, for kernels without openat2 (before 5.6).
int open_walking(int directory, const std::string& relative) {
  UniqueFd here;
  int at = directory;
  size_t start = 0;
  while (true) {
    size_t slash = relative.find('/', start);
    const bool last = slash == std::string::npos;
    const std::string part = relative.substr(start, last ? std::string::npos : slash - start);
    if (part == "..") {
      errno = EXDEV;
      return -1;
    }
    if (last) return ::openat(at, part.empty() ? "." : part.c_str(), kImageOpenFlags);
    if (!part.empty() && part != ".") {
      int next = ::openat(at, part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0) return -1;
      here = UniqueFd(next);
      at = here.get();
    }
    start = slash + 1;
  }
}

}  // namespace

ImageFiles::ImageFiles(const std::vector<std::string>& directories) {
  for (std::string path : directories) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("image directory " + path + ": " + std::strerror(errno));
    paths_.push_back(path);
    directories_.emplace_back(fd);
  }
}

UniqueFd ImageFiles::open_beneath(const UniqueFd& directory, const std::string& relative) const {
  if (relative.empty() || relative.front() == '/') return {};
  open_how how{};
  how.flags = static_cast<uint64_t>(kImageOpenFlags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0; attempt < 8; ++attempt) {
    long fd = ::syscall(SYS_openat2, directory.get(), relative.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == ENOSYS) return UniqueFd(open_walking(directory.get(), relative));
    if (errno != EAGAIN && errno != EINTR) return {};  // EAGAIN: a rename raced the lookup
  }
  return {};
}

bool ImageFiles::visible_to(const UniqueFd& directory, const std::string& relative, const std::string& project) const {
  constexpr std::string_view kRecordSuffix = ImageUploads::kRecordSuffix;
  // An upload's record: the image it describes is beside it.
  if (relative.ends_with(kRecordSuffix) &&
      open_beneath(directory, relative.substr(0, relative.size() - kRecordSuffix.size())))
    return false;
  UniqueFd record_fd = open_beneath(directory, relative + std::string(kRecordSuffix));
  if (!record_fd) {
    // An upload names its image file before its record: a file named like an image id without
    // one is an upload not finished (or cut short by a crash), not yet anybody's to read.
    const std::string name = relative.substr(relative.rfind('/') + 1);
    return !ImageUploads::looks_like_image_id(name);  // else an operator's image file: every project's
  }
  // The controller writes these records (a few hundred bytes); anything else there, or one it
  // cannot read, hides the image rather than show it to the wrong project.
  std::string text(64 * 1024, '\0');
  const ssize_t n = ::pread(record_fd.get(), text.data(), text.size(), 0);
  if (n < 0 || static_cast<size_t>(n) == text.size()) return false;
  text.resize(static_cast<size_t>(n));
  nlohmann::json record;
  try {
    record = parse_untrusted_json(text);
  } catch (const UntrustedJsonError&) {
    return false;
  }
  if (!record.is_object() || !record.contains("owner")) return true;  // not an upload's record
  const nlohmann::json& owner = record["owner"];
  const nlohmann::json visibility = record.value("visibility", nlohmann::json("private"));
  if (visibility == "public" || visibility == "community") return true;
  return owner.is_string() && owner.get<std::string>() == project;
}

OpenedImage ImageFiles::open(const std::string& reference, const std::string& project) const {
  if (reference.empty() || reference.find('\0') != std::string::npos) not_an_image(reference);
  for (size_t i = 0; i < directories_.size(); ++i) {
    std::optional<std::string> relative =
        reference.front() == '/' ? relative_to(paths_[i], reference) : std::optional<std::string>(reference);
    if (!relative) continue;
    UniqueFd fd = open_beneath(directories_[i], *relative);
    if (!fd) continue;
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (!visible_to(directories_[i], *relative, project)) continue;
    // Back to blocking reads for the copy.
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) continue;
    return {std::move(fd), static_cast<uint64_t>(st.st_size)};
  }
  not_an_image(reference);
}

}  // namespace volgate::controller
