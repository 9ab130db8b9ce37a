#pragma once
// Image formats through Debian's qemu-img, on files this process has already opened.
//
// qemu-img is handed descriptors, never paths: the image a request named was opened confined to
// an image directory (image_files.hpp), and qemu-img reads that same open file as /dev/fd/3.
// A qcow2 header can still name other files for QEMU to open with the controller's rights: a
// backing file, or an external data file that holds the guest's data in its place (the hole
// behind Cinder's and Glance's OSSA-2024-001). Both are refused when the image is inspected, and
// the conversion opens the image with its backing forced to null, so QEMU never follows a name
// from the header even if the file is rewritten between the inspection and the copy.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace volgate::controller {

enum class ImageFormat { raw, qcow2 };

std::string_view to_string(ImageFormat format);

// What the first bytes of the file open on `fd` say: qcow2 by its magic, raw otherwise (a raw
// image is copied byte for byte, never interpreted).
ImageFormat detect_image_format(int fd);

struct Qcow2Facts {
  uint64_t virtual_size = 0;
};

// `qemu-img info` on the qcow2 image open on `fd` (which never opens a backing or data file).
// Throws ApiError 400 naming `reference` when the image has a backing file, an external data
// file, encryption, is marked corrupt, or qemu-img cannot read it; std::runtime_error when
// qemu-img cannot be run.
Qcow2Facts inspect_qcow2(int fd, const std::string& reference, std::chrono::milliseconds timeout);

// Writes the guest data of the qcow2 image open on `qcow2_fd` into the file open on `raw_fd`
// (already at least the image's virtual size), leaving holes where the data is zero. Throws
// std::runtime_error with qemu-img's words when it fails or takes longer than `timeout`, or
// saying so when `cancel` became true (qemu-img is then killed within 100 ms).
void convert_qcow2_to_raw(int qcow2_fd, int raw_fd, std::chrono::milliseconds timeout,
                          const std::atomic<bool>* cancel = nullptr);

// Writes the raw file open on `raw_fd` as a qcow2 image into the empty file open on `qcow2_fd`.
void convert_raw_to_qcow2(int raw_fd, int qcow2_fd, std::chrono::milliseconds timeout,
                          const std::atomic<bool>* cancel = nullptr);

}  // namespace volgate::controller
