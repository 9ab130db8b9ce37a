#pragma once
// Files that exist without a name until they are complete (O_TMPFILE): a copy that fails, or a
// process killed in the middle of one, leaves nothing behind to clean up, and the finished file
// appears under its name in one step, never half written.
#include <string>

#include "common/unique_fd.hpp"

namespace volgate {

// A new empty file, readable and writable, in the directory `directory_fd` refers to (an
// O_PATH descriptor will do), with no name. Throws std::system_error.
UniqueFd create_unnamed_file(int directory_fd, const std::string& what);

// Gives the unnamed file `fd` the name `name` in `directory_fd`, after its data is on disk
// (fsync, then the directory's fsync). Throws std::system_error; EEXIST when the name is taken,
// which is never replaced.
void name_unnamed_file(int fd, int directory_fd, const std::string& name);

}  // namespace volgate
