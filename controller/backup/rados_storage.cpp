#include "controller/backup/rados_storage.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <stdexcept>
#include <system_error>

namespace volgate::controller {
namespace {

constexpr char kLockObject[] = "lock";
constexpr char kLockName[] = "volgate-backup-repository";
constexpr std::string_view kChunkPrefix = "chunk.", kManifestPrefix = "manifest.", kCorruptPrefix = "corrupt.";

// Splits a buffer of '\0'-terminated strings (as rados_list_lockers fills them).
std::vector<std::string> split_nul(const std::vector<char>& buffer, size_t length) {
  std::vector<std::string> out;
  for (size_t at = 0; at < length && at < buffer.size();) {
    std::string s(buffer.data() + at);
    at += s.size() + 1;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

RadosStorage::RadosStorage(const backends::RadosClientOptions& client, std::string pool, std::string owner)
    : pool_(std::move(pool)), cookie_(std::move(owner)) {
  const std::string where = "backup repository in Ceph pool " + pool_ + ": ";
  try {
    cluster_ = backends::RadosCluster::connect(client);
  } catch (const std::exception& e) {
    throw std::runtime_error(where + e.what());
  }
  if (int rc = rados_ioctx_create(cluster_->handle(), pool_.c_str(), &io_); rc < 0)
    throw std::runtime_error(where + "open the pool: " + std::strerror(-rc));
  try {
    lock();
  } catch (...) {
    rados_ioctx_destroy(io_);
    throw;
  }
}

RadosStorage::~RadosStorage() {
  rados_unlock(io_, kLockObject, kLockName, cookie_.c_str());
  rados_ioctx_destroy(io_);
}

void RadosStorage::lock() {
  const std::string where = "backup repository in Ceph pool " + pool_;
  for (int attempt = 0; attempt < 2; ++attempt) {
    int rc = rados_lock_exclusive(io_, kLockObject, kLockName, cookie_.c_str(), "volgate controller", nullptr, 0);
    if (rc == 0 || rc == -EEXIST) return;
    if (rc != -EBUSY) throw std::runtime_error(where + ": lock: " + std::strerror(-rc));
    // Held: by this controller before a crash (its cookie), or by another one.
    int exclusive = 0;
    std::vector<char> tag(256), clients(4096), cookies(4096), addrs(4096);
    size_t tag_len = tag.size(), clients_len = clients.size(), cookies_len = cookies.size(), addrs_len = addrs.size();
    ssize_t n = rados_list_lockers(io_, kLockObject, kLockName, &exclusive, tag.data(), &tag_len, clients.data(),
                                   &clients_len, cookies.data(), &cookies_len, addrs.data(), &addrs_len);
    if (n < 0) throw std::runtime_error(where + ": list its lockers: " + std::strerror(static_cast<int>(-n)));
    const auto holders = split_nul(clients, clients_len), holder_cookies = split_nul(cookies, cookies_len);
    bool mine = !holders.empty() && holders.size() == holder_cookies.size();
    for (const auto& c : holder_cookies) mine = mine && c == cookie_;
    if (!mine)
      throw std::runtime_error(where + " is in use by another controller (" +
                               (holders.empty() ? std::string("unknown") : holders[0] + ", " + holder_cookies[0]) + ")");
    spdlog::warn("{}: breaking the lock this controller ({}) held before it stopped ({})", where, cookie_, holders[0]);
    for (const auto& h : holders) rados_break_lock(io_, kLockObject, kLockName, h.c_str(), cookie_.c_str());
  }
  throw std::runtime_error(where + ": its lock is taken again as soon as it is broken");
}

std::string RadosStorage::object(Space space, const std::string& name) const {
  return std::string(space == Space::chunks ? kChunkPrefix : kManifestPrefix) + name;
}

std::string RadosStorage::where(Space space, const std::string& name) const { return pool_ + "/" + object(space, name); }

void RadosStorage::put(Space space, const std::string& name, std::span<const std::span<const std::byte>> parts) {
  std::string whole;
  for (const auto& p : parts) whole.append(reinterpret_cast<const char*>(p.data()), p.size());
  const std::string oid = object(space, name);
  int rc = rados_write_full(io_, oid.c_str(), whole.data(), whole.size());
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), "write " + pool_ + "/" + oid);
}

std::optional<std::string> RadosStorage::get(Space space, const std::string& name, size_t limit) const {
  const std::string oid = object(space, name);
  uint64_t size = 0;
  time_t mtime = 0;
  int rc = rados_stat(io_, oid.c_str(), &size, &mtime);
  if (rc == -ENOENT) return std::nullopt;
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), "stat " + pool_ + "/" + oid);
  if (size > limit)
    throw std::runtime_error(pool_ + "/" + oid + " holds " + std::to_string(size) + " bytes, more than the " +
                             std::to_string(limit) + " expected");
  std::string out(static_cast<size_t>(size), '\0');
  // One read of the whole object (at most a chunk's size, or a manifest's).
  int n = rados_read(io_, oid.c_str(), out.data(), out.size(), 0);
  if (n == -ENOENT) return std::nullopt;
  if (n < 0) throw std::system_error(-n, std::generic_category(), "read " + pool_ + "/" + oid);
  out.resize(static_cast<size_t>(n));
  return out;
}

bool RadosStorage::contains(Space space, const std::string& name) const {
  uint64_t size = 0;
  time_t mtime = 0;
  const std::string oid = object(space, name);
  int rc = rados_stat(io_, oid.c_str(), &size, &mtime);
  if (rc < 0 && rc != -ENOENT) throw std::system_error(-rc, std::generic_category(), "stat " + pool_ + "/" + oid);
  return rc == 0;
}

void RadosStorage::remove(Space space, const std::string& name) {
  const std::string oid = object(space, name);
  int rc = rados_remove(io_, oid.c_str());
  if (rc < 0 && rc != -ENOENT) throw std::system_error(-rc, std::generic_category(), "remove " + pool_ + "/" + oid);
}

std::vector<std::string> RadosStorage::list(Space space) const {
  const std::string_view prefix = space == Space::chunks ? kChunkPrefix : kManifestPrefix;
  std::vector<std::string> out;
  rados_list_ctx_t ctx = nullptr;
  int rc = rados_nobjects_list_open(io_, &ctx);
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), "list the objects of Ceph pool " + pool_);
  for (;;) {
    const char* entry = nullptr;
    rc = rados_nobjects_list_next(ctx, &entry, nullptr, nullptr);
    if (rc == -ENOENT) break;
    if (rc < 0) {
      rados_nobjects_list_close(ctx);
      throw std::system_error(-rc, std::generic_category(), "list the objects of Ceph pool " + pool_);
    }
    std::string_view oid(entry);
    if (oid.starts_with(prefix)) out.emplace_back(oid.substr(prefix.size()));
  }
  rados_nobjects_list_close(ctx);
  return out;
}

// RADOS has no rename: the chunk is copied to corrupt.HASH, then removed.
void RadosStorage::quarantine(const std::string& chunk) {
  auto data = get(Space::chunks, chunk, size_t{1} << 30);
  if (!data) return;
  const std::string aside = std::string(kCorruptPrefix) + chunk;
  int rc = rados_write_full(io_, aside.c_str(), data->data(), data->size());
  if (rc < 0) throw std::system_error(-rc, std::generic_category(), "write " + pool_ + "/" + aside);
  remove(Space::chunks, chunk);
}

}  // namespace volgate::controller
