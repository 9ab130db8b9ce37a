#include "controller/backup/directory_storage.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <system_error>

#include "controller/backup/atomic_file.hpp"

namespace volgate::controller {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

constexpr char kHex[] = "0123456789abcdef";

[[noreturn]] void fail(const std::string& what, const std::string& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), what + " " + path);
}

void make_directory(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) fail("create", path);
}

// A fresh folder for temporary files: anything there is a crash's leftover.
void clear_directory(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) throw std::system_error(ec, "remove " + path);
  make_directory(path);
}

UniqueFd lock_directory(const std::string& dir) {
  make_directory(dir);
  const std::string path = dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) fail("open", path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) throw std::runtime_error("backup repository " + dir + " is in use by another process");
    fail("lock", path);
  }
  return fd;
}

// Names (no dot files) in `dir`; nothing when it does not exist.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) {
    if (errno == ENOENT) return out;
    fail("list", dir);
  }
  while (const dirent* e = ::readdir(d.get()))
    if (e->d_name[0] != '.') out.emplace_back(e->d_name);
  return out;
}

}  // namespace

DirectoryStorage::DirectoryStorage(std::string directory)
    : directory_(std::move(directory)), lock_(lock_directory(directory_)) {
  const std::string chunks = directory_ + "/chunks", manifests = directory_ + "/manifests";
  make_directory(chunks);
  clear_directory(chunks + "/.tmp");
  for (char a : std::string_view(kHex, 16))
    for (char b : std::string_view(kHex, 16)) make_directory(chunks + "/" + a + b);
  sync_directory(chunks);
  make_directory(manifests);
  clear_directory(manifests + "/.tmp");
}

// The names come checked (chunk hashes, backup ids): none holds a slash or a dot.
std::string DirectoryStorage::where(Space space, const std::string& name) const {
  if (space == Space::manifests) return directory_ + "/manifests/" + name + ".json";
  return directory_ + "/chunks/" + name.substr(0, 2) + "/" + name;
}

void DirectoryStorage::put(Space space, const std::string& name, std::span<const std::span<const std::byte>> parts) {
  const bool manifest = space == Space::manifests;
  write_file_atomically(directory_ + (manifest ? "/manifests/.tmp" : "/chunks/.tmp"), where(space, name), parts,
                        /*sync_folder=*/manifest);
}

std::optional<std::string> DirectoryStorage::get(Space space, const std::string& name, size_t limit) const {
  try {
    return read_small_file(where(space, name), limit);
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::no_such_file_or_directory) return std::nullopt;
    throw;
  }
}

bool DirectoryStorage::contains(Space space, const std::string& name) const {
  return ::access(where(space, name).c_str(), F_OK) == 0;
}

void DirectoryStorage::remove(Space space, const std::string& name) {
  const std::string path = where(space, name);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("remove", path);
  if (space == Space::manifests) sync_directory(directory_ + "/manifests");
}

std::vector<std::string> DirectoryStorage::list(Space space) const {
  std::vector<std::string> out;
  if (space == Space::manifests) {
    for (auto& name : entries(directory_ + "/manifests"))
      if (name.ends_with(".json")) out.push_back(name.substr(0, name.size() - 5));
    return out;
  }
  for (char a : std::string_view(kHex, 16))
    for (char b : std::string_view(kHex, 16))
      for (auto& name : entries(directory_ + "/chunks/" + a + b)) out.push_back(std::move(name));
  return out;
}

void DirectoryStorage::quarantine(const std::string& chunk) {
  const std::string path = where(Space::chunks, chunk);
  const std::string aside = directory_ + "/chunks/.corrupt/" + chunk;
  make_directory(directory_ + "/chunks/.corrupt");
  if (::rename(path.c_str(), aside.c_str()) != 0 && errno != ENOENT) fail("move aside", path);
}

void DirectoryStorage::sync_chunks(const std::vector<std::string>& names) {
  std::set<std::string> folders;
  for (const auto& n : names) folders.insert(directory_ + "/chunks/" + n.substr(0, 2));
  for (const auto& f : folders) sync_directory(f);
}

}  // namespace volgate::controller
