#include "controller/pools/image_uploads.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "backends/sync_io.hpp"
#include "common/unnamed_file.hpp"
#include "controller/domain/timestamp.hpp"
#include "crypto/sha256.hpp"

namespace volgate::controller {
namespace {

constexpr size_t kChunk = 1 << 20;

[[noreturn]] void fail(const std::string& what, int error = errno) {
  throw std::system_error(error, std::generic_category(), what);
}

bool all_zero(const std::byte* data, size_t length) {
  return std::all_of(data, data + length, [](std::byte b) { return b == std::byte{0}; });
}

void write_all(int fd, const std::byte* data, size_t length, uint64_t offset, const char* what) {
  while (length > 0) {
    ssize_t n = ::pwrite(fd, data, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(what);
    data += n;
    length -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// SHA-256 of an image's bytes, Glance's "multihash" (os_hash_algo, os_hash_value) with its
// hashing algorithm set to sha256: with the CPU's SHA extensions it costs about a third of
// Glance's default sha512 plus its legacy MD5 `checksum`, for an image that is hashed whole,
// holes included.
class ImageDigest {
 public:
  ImageDigest() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("cannot start the image checksum");
  }
  void update(const std::byte* data, size_t length) {
    if (EVP_DigestUpdate(context_.get(), data, length) != 1) throw std::runtime_error("image checksum");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned length = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest, &length) != 1) throw std::runtime_error("image checksum");
    return crypto::to_hex(std::span(digest, length));
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

// Where the next data is: how many bytes from `at` on read as zeroes without being read (holes
// and zero extents the device reports), and how many after those hold data. A device that
// reports nothing (or fails to) has data everywhere.
struct Stretch {
  uint64_t zero = 0;
  uint64_t data = 0;
};

Stretch next_stretch(backends::BlockDevice& device, backends::SyncIo& io, uint64_t at, uint64_t end) {
  if (!device.capabilities().can_block_status) return {0, end - at};
  std::vector<backends::Extent> extents;
  std::error_code ec = io.run([&](auto done) {
    device.block_status(at, end - at, [&extents, done](std::error_code e, std::vector<backends::Extent> got) {
      extents = std::move(got);
      done(e);
    });
  });
  Stretch s;
  if (ec || extents.empty()) return {0, end - at};
  size_t i = 0;
  for (; i < extents.size() && extents[i].zero; ++i) s.zero += extents[i].length;
  for (; i < extents.size() && !extents[i].zero; ++i) s.data += extents[i].length;
  s.zero = std::min(s.zero, end - at);
  s.data = std::min(s.data, end - at - s.zero);
  if (s.zero == 0 && s.data == 0) s.data = end - at;
  return s;
}

// The volume's bytes into `fd`, which is `bytes` long and all hole: what reads as zeroes is not
// written, so it stays a hole, and what the device reports as zeroes is not even read. Every
// byte goes through `digest` on its way.
void copy_device(backends::BlockDevice& device, uint64_t bytes, int fd, ImageDigest& digest,
                 const CopyProgress& progress) {
  std::vector<std::byte> buffer(kChunk);
  static const std::vector<std::byte> zeroes(kChunk);
  backends::SyncIo io;
  if (progress) progress(0, bytes);
  for (uint64_t at = 0; at < bytes;) {
    Stretch stretch = next_stretch(device, io, at, bytes);
    for (const uint64_t end = at + stretch.zero; at < end;) {
      const size_t length = static_cast<size_t>(std::min<uint64_t>(kChunk, end - at));
      digest.update(zeroes.data(), length);
      at += length;
      if (progress) progress(at, bytes);
    }
    for (const uint64_t end = at + stretch.data; at < end;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end - at));
      if (auto ec = io.read(device, at, {buffer.data(), want})) throw std::system_error(ec, "read the volume");
      digest.update(buffer.data(), want);
      if (!all_zero(buffer.data(), want)) write_all(fd, buffer.data(), want, at, "write the image");
      at += want;
      if (progress) progress(at, bytes);
    }
  }
}

// The checksum of the whole file open on `fd` (a qcow2 image, made from the raw copy).
std::string checksum_of(int fd) {
  ImageDigest digest;
  std::vector<std::byte> buffer(kChunk);
  for (off_t at = 0;;) {
    ssize_t got = ::pread(fd, buffer.data(), buffer.size(), at);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("read the image back");
    if (got == 0) break;
    digest.update(buffer.data(), static_cast<size_t>(got));
    at += got;
  }
  return digest.hex();
}

uint64_t size_of(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) fail("stat the image");
  return static_cast<uint64_t>(st.st_size);
}

// Image ids come from new_uuid(); anything else would be a path.
void check_id(const std::string& id) {
  if (id.empty() || id.find_first_not_of("0123456789abcdef-") != std::string::npos)
    throw std::invalid_argument("not an image id: '" + id + "'");
}

}  // namespace

ImageUploads::ImageUploads(const std::string& directory) : path_(directory) {
  directory_ = UniqueFd(::open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!directory_) throw std::runtime_error("image upload directory " + directory + ": " + std::strerror(errno));
}

void ImageUploads::write(backends::BlockDevice& device, uint64_t bytes, const ImageRecord& record,
                         std::chrono::milliseconds convert_timeout, const CopyProgress& progress,
                         const std::atomic<bool>* cancel) {
  check_id(record.id);
  UniqueFd raw = create_unnamed_file(directory_.get(), "the image file");
  if (::ftruncate(raw.get(), static_cast<off_t>(bytes)) != 0) fail("size the image");
  ImageDigest digest;
  copy_device(device, bytes, raw.get(), digest, progress);
  // A raw image is copied byte for byte into new volumes, but one that starts like a qcow2
  // image would be read as qcow2 (formats are told by their magic): the volume's owner could
  // make an image that is not what its metadata says. Glance refuses such uploads; so does this.
  if (record.disk_format == ImageFormat::raw && detect_image_format(raw.get()) != ImageFormat::raw)
    throw std::runtime_error("the volume's data begins with a qcow2 header, so as a raw image it would be read as "
                             "qcow2; upload it with disk_format qcow2");
  UniqueFd image = std::move(raw);
  std::string checksum = digest.hex();
  if (record.disk_format == ImageFormat::qcow2) {
    UniqueFd qcow2 = create_unnamed_file(directory_.get(), "the qcow2 image file");
    convert_raw_to_qcow2(image.get(), qcow2.get(), convert_timeout, cancel);
    image = std::move(qcow2);  // the raw copy goes with its last descriptor
    checksum = checksum_of(image.get());
  }

  nlohmann::json meta = {{"id", record.id},
                         {"name", record.name},
                         {"disk_format", to_string(record.disk_format)},
                         {"container_format", record.container_format},
                         {"visibility", record.visibility},
                         {"protected", record.is_protected},
                         {"size", size_of(image.get())},
                         {"virtual_size", bytes},
                         {"os_hash_algo", "sha256"},
                         {"os_hash_value", checksum},
                         {"created_at", utc_timestamp()},
                         {"owner", record.project},
                         {"volume_id", record.volume_id},
                         {"encrypted", record.encrypted},
                         {"status", "active"}};
  const std::string text = meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  UniqueFd meta_file = create_unnamed_file(directory_.get(), "the image's metadata file");
  write_all(meta_file.get(), reinterpret_cast<const std::byte*>(text.data()), text.size(), 0,
            "write the image's metadata");

  name_unnamed_file(image.get(), directory_.get(), record.id);
  try {
    name_unnamed_file(meta_file.get(), directory_.get(), record.id + std::string(kRecordSuffix));
  } catch (...) {
    ::unlinkat(directory_.get(), record.id.c_str(), 0);
    throw;
  }
}

bool ImageUploads::looks_like_image_id(std::string_view name) {
  if (name.size() != 36) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? name[i] != '-' : !std::isxdigit(static_cast<unsigned char>(name[i]))) return false;
  }
  return true;
}

void ImageUploads::remove(const std::string& id) {
  check_id(id);
  for (const std::string& name : {id + std::string(kRecordSuffix), id})
    if (::unlinkat(directory_.get(), name.c_str(), 0) != 0 && errno != ENOENT) fail("remove image " + name);
}

}  // namespace volgate::controller
