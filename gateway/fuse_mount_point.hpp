#pragma once
// The directory `volgate serve --fuse DIR` mounts on, checked before anything is served.
#include <string>

namespace volgate::gateway {

// The file system type volgate's FUSE mounts show in /proc/self/mountinfo.
inline constexpr const char* kFuseFsType = "fuse.volgate";

// Returns DIR as an absolute path without symlinks. Throws std::invalid_argument with one line
// naming DIR when it does not exist, is not a directory, or is a volgate mount that still
// answers (another gateway serves it). A FUSE mount whose server died (every access fails with
// ENOTCONN) is detached first, with a warning in the log: a restart after a SIGKILL works.
std::string prepare_fuse_mount_point(const std::string& dir);

}  // namespace volgate::gateway
