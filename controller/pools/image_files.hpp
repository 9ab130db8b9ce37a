#pragma once
// The image files a volume may be created from (`imageRef`): regular files beneath the
// configured image directories, and nothing else the controller can read.
//
// The controller reads images with its own rights, so a path that merely names a readable file
// would let any API user copy the controller's secrets, SSH keys or other volumes into a volume
// and read them back. An image is therefore opened once, when the request arrives, beneath one
// image directory with no symlink followed and no `..` leaving it (openat2 with RESOLVE_BENEATH
// and RESOLVE_NO_SYMLINKS), checked with fstat on that descriptor, and the copy reads from the
// same descriptor: renaming or swapping the path afterwards changes nothing.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace volgate::controller {

struct OpenedImage {
  UniqueFd fd;
  uint64_t size = 0;
};

class ImageFiles {
 public:
  // Opens every directory now; throws std::runtime_error naming one that cannot be opened.
  explicit ImageFiles(const std::vector<std::string>& directories);

  // `reference` is an absolute path beneath one of the directories, or a path relative to them
  // (tried in the order configured). Throws ApiError (400) with the same message whether the
  // file is missing, outside, a symlink, unreadable, or not a regular file, so the answer tells
  // nothing about files elsewhere.
  //
  // An image a volume was uploaded to (its `ID.json` record beside it names an `owner`) is
  // opened for a volume of `project` only when that is its owner or its visibility is public or
  // community, as Glance shows images; an upload's record itself is no image. Both get the same
  // 400, so another project's private image is not even shown to exist.
  OpenedImage open(const std::string& reference, const std::string& project) const;

  const std::vector<std::string>& directories() const { return paths_; }

 private:
  UniqueFd open_beneath(const UniqueFd& directory, const std::string& relative) const;
  // Whether a volume of `project` may be made from the image at `relative` (see open()).
  bool visible_to(const UniqueFd& directory, const std::string& relative, const std::string& project) const;

  std::vector<std::string> paths_;
  std::vector<UniqueFd> directories_;
};

}  // namespace volgate::controller
