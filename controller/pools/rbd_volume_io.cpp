#include "controller/pools/rbd_volume_io.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <system_error>

namespace volgate::controller {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& image, int rc) {
  throw std::system_error(rc < 0 ? -rc : EIO, std::generic_category(), what + " RBD image " + image);
}

// Byte ranges, merged where they touch: what rbd_diff_iterate2 reported.
class Extents {
 public:
  void add(uint64_t offset, uint64_t length) {
    if (length == 0) return;
    uint64_t end = offset + length;
    auto it = ranges_.upper_bound(offset);
    if (it != ranges_.begin() && std::prev(it)->second >= offset) {
      --it;
      offset = it->first;
      end = std::max(end, it->second);
    }
    while (it != ranges_.end() && it->first <= end) {
      end = std::max(end, it->second);
      it = ranges_.erase(it);
    }
    ranges_[offset] = end;
  }
  bool overlaps(uint64_t offset, uint64_t length) const {
    auto it = ranges_.lower_bound(offset + length);  // the first range starting at or past the end
    return it != ranges_.begin() && std::prev(it)->second > offset;
  }
  uint64_t bytes() const {
    uint64_t total = 0;
    for (const auto& [start, end] : ranges_) total += end - start;
    return total;
  }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end
};

// The objects of `image` (as opened: head or snapshot) that hold data, or with `since` those
// that differ from that snapshot. Whole objects: a backup reads chunk-sized pieces that are
// the objects of an image with RBD's default 4 MiB objects.
Extents diff(librbd::Image& image, const std::string& name, uint64_t size, const std::optional<std::string>& since) {
  Extents out;
  auto collect = [](uint64_t offset, size_t length, int exists, void* arg) {
    // A changed extent that is now a hole (discarded) changed too: it is reported as such.
    (void)exists;
    static_cast<Extents*>(arg)->add(offset, length);
    return 0;
  };
  int rc = image.diff_iterate2(since ? since->c_str() : nullptr, 0, size, /*include_parent=*/true,
                               /*whole_object=*/true, collect, &out);
  if (rc < 0) fail(since ? "compare with snapshot " + *since + " of" : "find the data of", name, rc);
  return out;
}

class RbdVolumeReader final : public VolumeReader {
 public:
  RbdVolumeReader(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image,
                  const std::optional<std::string>& snapshot, const std::optional<std::string>& since)
      : name_(snapshot ? image + "@" + *snapshot : image) {
    int rc = rbd.open_read_only(io, image_, image.c_str(), snapshot ? snapshot->c_str() : nullptr);
    if (rc < 0) fail("open", name_, rc);
    rc = image_.size(&size_);
    if (rc < 0) fail("size of", name_, rc);
    data_ = diff(image_, name_, size_, std::nullopt);
    if (since) changed_ = diff(image_, name_, size_, since);
  }
  ~RbdVolumeReader() override { image_.close(); }

  uint64_t size() const override { return size_; }
  bool may_hold_data(uint64_t offset, uint64_t length) override { return data_.overlaps(offset, length); }
  bool changes_known() const override { return changed_.has_value(); }
  bool may_have_changed(uint64_t offset, uint64_t length) override {
    return !changed_ || changed_->overlaps(offset, length);
  }
  void read(uint64_t offset, std::span<std::byte> out) override {
    ceph::bufferlist bl;
    ssize_t n = image_.read2(offset, out.size(), bl, 0);
    if (n < 0) fail("read", name_, static_cast<int>(n));
    if (static_cast<size_t>(n) != out.size() || bl.length() != out.size()) fail("read (short) of", name_, -EIO);
    bl.begin().copy(static_cast<unsigned>(out.size()), reinterpret_cast<char*>(out.data()));
  }

 private:
  std::string name_;
  librbd::Image image_;
  uint64_t size_ = 0;
  Extents data_;
  std::optional<Extents> changed_;
};

class RbdVolumeWriter final : public VolumeWriter {
 public:
  RbdVolumeWriter(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image) : name_(image) {
    int rc = rbd.open(io, image_, image.c_str());
    if (rc < 0) fail("open", name_, rc);
    rc = image_.size(&size_);
    if (rc < 0) fail("size of", name_, rc);
    // librbd takes a discard length as a signed 32-bit count: 1 GiB at a time (whole objects).
    constexpr uint64_t kStep = 1ull << 30;
    for (uint64_t at = 0; at < size_; at += kStep) {
      rc = image_.discard(at, std::min(kStep, size_ - at));
      if (rc < 0) fail("discard", name_, rc);
    }
  }
  ~RbdVolumeWriter() override { image_.close(); }

  uint64_t size() const override { return size_; }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    ceph::bufferlist bl;
    bl.append(reinterpret_cast<const char*>(data.data()), static_cast<unsigned>(data.size()));
    ssize_t n = image_.write2(offset, data.size(), bl, 0);
    if (n < 0) fail("write", name_, static_cast<int>(n));
    if (static_cast<size_t>(n) != data.size()) fail("write (short) to", name_, -EIO);
  }
  void finish() override {
    int rc = image_.flush();
    if (rc < 0) fail("flush", name_, rc);
  }

 private:
  std::string name_;
  librbd::Image image_;
  uint64_t size_ = 0;
};

}  // namespace

std::unique_ptr<VolumeReader> read_rbd_image(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image,
                                             const std::optional<std::string>& snapshot,
                                             const std::optional<std::string>& since) {
  return std::make_unique<RbdVolumeReader>(rbd, io, image, snapshot, since);
}

std::unique_ptr<VolumeWriter> overwrite_rbd_image(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image) {
  return std::make_unique<RbdVolumeWriter>(rbd, io, image);
}

}  // namespace volgate::controller
