#include "crypto/secure_bytes.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace volgate::crypto {

SecureBytes::SecureBytes(size_t size) {
  if (size == 0) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  mapped_ = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Both are best effort: without CAP_IPC_LOCK the lock limit may be small, and the key is
  // still wiped on release.
  ::mlock(p, mapped_);
  ::madvise(p, mapped_, MADV_DONTDUMP);
  data_ = static_cast<std::byte*>(p);
  size_ = size;
}

SecureBytes::~SecureBytes() { release(); }

SecureBytes::SecureBytes(SecureBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

SecureBytes& SecureBytes::operator=(SecureBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

void SecureBytes::shrink(size_t size) {
  if (size >= size_) return;
  OPENSSL_cleanse(data_ + size, size_ - size);
  size_ = size;
}

void SecureBytes::release() {
  if (!data_) return;
  OPENSSL_cleanse(data_, mapped_);
  ::munlock(data_, mapped_);
  ::munmap(data_, mapped_);
  data_ = nullptr;
  size_ = mapped_ = 0;
}

SecureBytes read_key_file(const std::string& path) {
  const bool from_stdin = path == "-";
  const std::string name = from_stdin ? "standard input" : "key file " + path;
  int fd = from_stdin ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(name + ": " + std::strerror(errno));
  // The buffer starts at one page and doubles while the file fills it, so a passphrase takes
  // a page of locked memory. A buffer of the largest size up front would never be locked for
  // a user without CAP_IPC_LOCK: it is just over the 8 MiB RLIMIT_MEMLOCK they get by default.
  // It ends one byte past the limit, so an oversized file is recognised rather than truncated.
  SecureBytes buffer(static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  size_t got = 0;
  int error = 0;
  for (;;) {
    if (got == buffer.size()) {
      if (got > kMaxKeyFileSize) break;
      SecureBytes larger(std::min(2 * got, kMaxKeyFileSize + 1));
      std::memcpy(larger.data(), buffer.data(), got);
      buffer = std::move(larger);  // the smaller one is wiped as it goes
    }
    ssize_t n = ::read(fd, buffer.data() + got, buffer.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (!from_stdin) ::close(fd);
  if (error) throw std::runtime_error(name + ": " + std::strerror(error));
  if (got == 0) throw std::runtime_error(name + " is empty");
  if (got > kMaxKeyFileSize) throw std::runtime_error(name + " is larger than 8 MiB");
  buffer.shrink(got);
  return buffer;
}

}  // namespace volgate::crypto
