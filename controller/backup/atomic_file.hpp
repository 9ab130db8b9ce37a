#pragma once
// Writing a file so that it is either there whole or not at all, after a crash too: write it
// under a temporary name, fsync it, rename it to its name, fsync the folder that holds the name.
#include <cstddef>
#include <span>
#include <string>

namespace volgate::controller {

// Writes `parts` one after the other to `path`, atomically, through a temporary file in
// `temp_dir` (same filesystem). Throws std::system_error naming the file; the temporary file
// is removed then. `sync_folder` false leaves the fsync of path's folder to the caller (who
// batches them): until then a crash may lose the name, never leave a partial file under it.
void write_file_atomically(const std::string& temp_dir, const std::string& path,
                           std::span<const std::span<const std::byte>> parts, bool sync_folder = true);

// fsyncs a folder, so a rename or unlink inside it survives a crash. Throws std::system_error.
void sync_directory(const std::string& dir);

// Reads a whole regular file of at most `limit` bytes. Throws std::system_error (ENOENT for a
// missing file) or std::runtime_error when it is larger.
std::string read_small_file(const std::string& path, size_t limit);

}  // namespace volgate::controller
