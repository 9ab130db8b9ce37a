#pragma once
// Where `os-volume_upload_image` puts the images it makes: one directory (a stand-in for
// Glance; by default the first image directory, so that every upload is at once an imageRef
// for new volumes), holding the image under its id and a JSON file beside it (ID.json) that
// says what Glance would: name, formats, size, checksum, when and from which volume.
//
// Both files are written with no name (O_TMPFILE) and named only when complete, the image
// first: a failed or killed upload leaves nothing, and a reader never sees half an image.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "backends/block_device.hpp"
#include "common/unique_fd.hpp"
#include "controller/pools/pool.hpp"
#include "controller/pools/qemu_img.hpp"

namespace volgate::controller {

struct ImageRecord {
  std::string id;
  std::string name;
  ImageFormat disk_format = ImageFormat::raw;
  std::string container_format = "bare";
  std::string visibility = "private";
  bool is_protected = false;
  std::string volume_id;  // the volume it was made from
  bool encrypted = false;  // the volume's LUKS2 ciphertext, as stored (the key stays with the volume)
  std::string project;
};

class ImageUploads {
 public:
  // Opens the directory now; throws std::runtime_error when it cannot.
  explicit ImageUploads(const std::string& directory);

  // Writes the first `bytes` of `device` as image `record.id`, then its metadata file. Zero
  // blocks are left as holes in a raw image (and as unallocated clusters in a qcow2 one).
  // `progress` may throw to stop the copy, and `cancel` stops a qcow2 conversion. Throws
  // std::runtime_error or std::system_error; then nothing of the image is left.
  void write(backends::BlockDevice& device, uint64_t bytes, const ImageRecord& record,
             std::chrono::milliseconds convert_timeout, const CopyProgress& progress,
             const std::atomic<bool>* cancel = nullptr);
  // Removes image `id` and its metadata file, if there (undoing a write). Idempotent.
  void remove(const std::string& id);

  const std::string& directory() const { return path_; }

  // How uploads are named: the image under its id, a UUID, and its record beside it under the
  // id and this suffix (what image_files.cpp goes by to tell an upload from an operator's file).
  static constexpr std::string_view kRecordSuffix = ".json";
  static bool looks_like_image_id(std::string_view name);

 private:
  std::string path_;
  UniqueFd directory_;
};

}  // namespace volgate::controller
