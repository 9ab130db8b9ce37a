#pragma once
// Whole-image reading and writing of RBD images for backups and restores (volume_io.hpp),
// through librbd: the image's bytes as Ceph stores them (an encrypted volume's LUKS header and
// ciphertext included).
//
// A reader asks librbd once, when it opens, which objects hold data (rbd_diff_iterate2 with
// whole_object over the image and its parent), so that a backup skips the holes; given an
// earlier snapshot of the same image, it also asks which objects changed since then, so that an
// incremental backup reads only those.
#include <optional>
#include <rados/librados.hpp>
#include <rbd/librbd.hpp>

#include "controller/pools/volume_io.hpp"

namespace volgate::controller {

// Opens `image` (at RBD snapshot `snapshot` when given) read-only; with `since`, a snapshot of
// the same image taken earlier, the reader reports what changed after it (changes_known()).
// Throws std::runtime_error naming the image.
std::unique_ptr<VolumeReader> read_rbd_image(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image,
                                             const std::optional<std::string>& snapshot,
                                             const std::optional<std::string>& since);

// Opens `image` for a restore: everything it held is discarded first (it reads as zeros, and
// its objects are gone where the backup has no data). Throws std::runtime_error naming it.
std::unique_ptr<VolumeWriter> overwrite_rbd_image(librbd::RBD& rbd, librados::IoCtx& io, const std::string& image);

}  // namespace volgate::controller
