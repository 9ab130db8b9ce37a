#include "controller/pools/qemu_img.hpp"

#include <unistd.h>

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "common/run_program.hpp"
#include "common/untrusted_json.hpp"
#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

// qemu-img's answers are short; its info on a hostile header must not grow without bound.
constexpr size_t kMaxQemuImgOutput = 64 * 1024;

// The descriptors run_program places first (see there): the source, then the target.
constexpr const char* kFirstFd = "/dev/fd/3";
constexpr const char* kSecondFd = "/dev/fd/4";

// The last line qemu-img wrote, which says why it failed.
std::string last_words(const ProgramResult& r) {
  std::string text = r.output;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const size_t line = text.rfind('\n');
  if (line != std::string::npos) text.erase(0, line + 1);
  return text.empty() ? "no message" : text;
}

void run_conversion(const std::vector<std::string>& argv, int source_fd, int target_fd,
                    std::chrono::milliseconds timeout, const char* what, const std::atomic<bool>* cancel) {
  const int fds[] = {source_fd, target_fd};
  ProgramResult r = run_program(argv, timeout, {}, kMaxQemuImgOutput, fds, cancel);
  if (r.cancelled) throw std::runtime_error(std::string(what) + ": stopped (the controller is stopping)");
  if (r.timed_out)
    throw std::runtime_error(std::string(what) + ": qemu-img convert took longer than " +
                             std::to_string(timeout.count() / 1000) + " s and was stopped");
  if (r.exit_code != 0)
    throw std::runtime_error(std::string(what) + ": qemu-img convert failed: " + last_words(r));
}

}  // namespace

std::string_view to_string(ImageFormat format) { return format == ImageFormat::qcow2 ? "qcow2" : "raw"; }

ImageFormat detect_image_format(int fd) {
  static constexpr std::array<unsigned char, 4> kQcowMagic{'Q', 'F', 'I', 0xfb};
  std::array<unsigned char, 4> head{};
  ssize_t got;
  do {
    got = ::pread(fd, head.data(), head.size(), 0);
  } while (got < 0 && errno == EINTR);
  if (got < 0) throw std::system_error(errno, std::generic_category(), "read the image");
  return got == static_cast<ssize_t>(head.size()) && head == kQcowMagic ? ImageFormat::qcow2 : ImageFormat::raw;
}

Qcow2Facts inspect_qcow2(int fd, const std::string& reference, std::chrono::milliseconds timeout) {
  // -U: an image another process has open (a conversion running from it) is still inspected.
  const std::vector<std::string> argv = {"qemu-img", "info", "-U", "--output=json", "--image-opts",
                                         std::string("driver=qcow2,file.driver=file,file.filename=") + kFirstFd};
  const int fds[] = {fd};
  ProgramResult r = run_program(argv, timeout, {}, kMaxQemuImgOutput, fds);
  auto refuse = [&](const std::string& why) -> void {
    bad_request("Image " + reference + " cannot be used: " + why);
  };
  if (r.timed_out) refuse("qemu-img info took too long on it.");
  if (r.exit_code != 0 || r.output_truncated) refuse("qemu-img cannot read it as qcow2 (" + without_paths(last_words(r)) + ").");
  json info;
  try {
    info = parse_untrusted_json(r.output);
  } catch (const UntrustedJsonError&) {
    refuse("qemu-img info gave no answer about it.");
  }
  if (!info.is_object() || !info.contains("format") || info["format"] != "qcow2") refuse("it is not a qcow2 image.");
  // These name files outside the image, which QEMU would open with the controller's rights.
  if (info.contains("backing-filename") || info.contains("full-backing-filename"))
    refuse("it has a backing file; only self-contained qcow2 images are accepted (qemu-img convert -O qcow2 "
           "makes one).");
  const json* data = nullptr;
  if (info.contains("format-specific") && info["format-specific"].is_object() &&
      info["format-specific"].contains("data") && info["format-specific"]["data"].is_object())
    data = &info["format-specific"]["data"];
  if (data && data->contains("data-file"))
    refuse("it keeps its data in an external data file; only self-contained qcow2 images are accepted.");
  if (data && data->contains("encrypt")) refuse("it is encrypted with qcow2's own encryption.");
  if (info.contains("encrypted") && info["encrypted"] != false) refuse("it is encrypted with qcow2's own encryption.");
  if (data && data->contains("corrupt") && (*data)["corrupt"] != false) refuse("it is marked corrupt.");
  if (!info.contains("virtual-size") || !info["virtual-size"].is_number_unsigned() ||
      info["virtual-size"].get<uint64_t>() == 0)
    refuse("qemu-img reports no virtual size for it.");
  return {.virtual_size = info["virtual-size"].get<uint64_t>()};
}

void convert_qcow2_to_raw(int qcow2_fd, int raw_fd, std::chrono::milliseconds timeout,
                          const std::atomic<bool>* cancel) {
  // The source as a json: spec rather than a file name: the driver is given (no probing), and
  // "backing": null keeps QEMU from opening whatever backing file the header names.
  const std::string source = std::string(R"(json:{"driver":"qcow2","file":{"driver":"file","filename":")") +
                             kFirstFd + R"("},"backing":null})";
  run_conversion({"qemu-img", "convert", "-n", "--target-is-zero", source, "--target-image-opts",
                  std::string("driver=raw,file.driver=file,file.filename=") + kSecondFd},
                 qcow2_fd, raw_fd, timeout, "convert the qcow2 image", cancel);
}

void convert_raw_to_qcow2(int raw_fd, int qcow2_fd, std::chrono::milliseconds timeout,
                          const std::atomic<bool>* cancel) {
  run_conversion({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", kFirstFd, kSecondFd}, raw_fd, qcow2_fd, timeout,
                 "write the qcow2 image", cancel);
}

}  // namespace volgate::controller
