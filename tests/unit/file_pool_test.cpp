// FilePool on a real directory: sparse creates and copies, progress, the copy rate limit,
// idempotent deletes, and ids that cannot escape the directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/unique_fd.hpp"
#include "controller/pools/file_pool.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

class FilePoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // /dev/shm when it exists: tmpfs reports holes exactly, which the sparseness checks need.
    fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    dir = base / ("filepool-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    config.name = "p";
    config.driver = "file";
    config.directory = dir / "pool";
  }
  void TearDown() override { fs::remove_all(dir); }

  static uint64_t allocated(const std::string& path) {
    struct stat st{};
    ::stat(path.c_str(), &st);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  static void write_at(const std::string& path, uint64_t offset, const std::string& data) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
  }

  fs::path dir;
  PoolConfig config;
};

TEST_F(FilePoolTest, AThickPoolAllocatesWhatAnExtendAdds) {
  config.thin_provisioning = false;
  FilePool pool(config);
  pool.create_volume("aa-02", 1 << 20);
  pool.resize_volume("aa-02", 4 << 20);
  EXPECT_EQ(fs::file_size(pool.volume_path("aa-02")), 4u << 20);
  EXPECT_GE(allocated(pool.volume_path("aa-02")), 4u << 20);
}

TEST_F(FilePoolTest, CreatesSparseVolumesAndReportsCapacity) {
  FilePool pool(config);
  pool.create_volume("aa-01", 1 << 30);
  std::string path = pool.volume_path("aa-01");
  EXPECT_EQ(fs::file_size(path), 1u << 30);
  EXPECT_EQ(allocated(path), 0u);
  EXPECT_TRUE(pool.volume_exists("aa-01"));
  pool.create_volume("aa-01", 1 << 30);  // again: idempotent
  EXPECT_EQ(pool.export_spec("aa-01").path, path);
  EXPECT_EQ(gateway::format_backend(pool.export_spec("aa-01")), "file:" + path);
  PoolCapacity cap = pool.capacity();
  EXPECT_GT(cap.total_bytes, 0u);
  EXPECT_LE(cap.free_bytes, cap.total_bytes);
  EXPECT_EQ(pool.capabilities().at("thin_provisioning_support"), "true");
  pool.delete_volume("aa-01");
  pool.delete_volume("aa-01");
  EXPECT_FALSE(pool.volume_exists("aa-01"));
}

TEST_F(FilePoolTest, CopiesKeepDataAndHolesAndReportProgress) {
  FilePool pool(config);
  pool.create_volume("5ec", 64 << 20);
  std::string src = pool.volume_path("5ec");
  write_at(src, 0, std::string(4096, 'a'));
  write_at(src, 32 << 20, std::string(1 << 20, 'b'));
  write_at(src, 40 << 20, std::string(1 << 20, '\0'));  // allocated zeroes: not copied
  uint64_t last_done = 0, total_seen = 0;
  pool.clone_volume("d57", "5ec", 128 << 20, [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    total_seen = total;
  });
  std::string dst = pool.volume_path("d57");
  EXPECT_EQ(fs::file_size(dst), 128u << 20);
  EXPECT_EQ(total_seen, 64u << 20);
  EXPECT_EQ(last_done, total_seen);
  EXPECT_LE(allocated(dst), (1u << 20) + 64 * 1024);  // the 4 KiB and the 1 MiB, nothing else
  std::ifstream a(src, std::ios::binary), b(dst, std::ios::binary);
  std::string sa(64 << 20, '\0'), sb(64 << 20, '\0');
  a.read(sa.data(), static_cast<std::streamsize>(sa.size()));
  b.read(sb.data(), static_cast<std::streamsize>(sb.size()));
  EXPECT_TRUE(sa == sb);

  // A snapshot copy reports progress, and stops when the reporter throws (the controller stops).
  EXPECT_THROW(pool.create_snapshot("c0", "5ec", [](uint64_t, uint64_t) { throw std::runtime_error("stop"); }),
               std::runtime_error);
  pool.delete_snapshot("c0");
  uint64_t snapshot_total = 0;
  pool.create_snapshot("5", "5ec", [&](uint64_t, uint64_t total) { snapshot_total = total; });
  EXPECT_EQ(snapshot_total, 64u << 20);
  write_at(src, 0, std::string(4096, 'z'));
  pool.create_volume_from_snapshot("f5", "5", 64 << 20, {});
  std::ifstream c(pool.volume_path("f5"), std::ios::binary);
  std::string first(4096, '\0');
  c.read(first.data(), 4096);
  EXPECT_EQ(first, std::string(4096, 'a'));
  EXPECT_THROW(pool.clone_volume("5a", "5ec", 1 << 20, {}), std::invalid_argument);
  pool.delete_snapshot("5");
  pool.delete_snapshot("5");
  EXPECT_FALSE(fs::exists(pool.snapshot_path("5")));
}

TEST_F(FilePoolTest, CopyRateLimitIsHonoured) {
  config.copy_bps_limit = 16 << 20;
  FilePool pool(config);
  std::string image = dir / "image.raw";
  std::ofstream(image, std::ios::binary) << std::string(8 << 20, 'x');
  auto start = std::chrono::steady_clock::now();
  UniqueFd fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  pool.create_volume_from_file("1a9", fd.get(), 8 << 20, {});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 0.45);  // 8 MiB at 16 MiB/s
}

TEST_F(FilePoolTest, ACancelledCopyStopsAtOnce) {
  FilePool pool(config);
  std::string image = dir / "image.raw";
  std::ofstream(image, std::ios::binary) << std::string(8 << 20, 'x');
  int calls = 0;
  UniqueFd fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_THROW(pool.create_volume_from_file("1a9", fd.get(), 8 << 20,
                                            [&](uint64_t done, uint64_t) {
                                              ++calls;
                                              if (done > 0) throw std::runtime_error("stop");
                                            }),
               std::runtime_error);
  EXPECT_EQ(calls, 2);
}

TEST_F(FilePoolTest, IdsCannotEscapeTheDirectory) {
  FilePool pool(config);
  EXPECT_THROW(pool.create_volume("../etc", 1 << 20), std::invalid_argument);
  EXPECT_THROW(pool.delete_volume("a/b"), std::invalid_argument);
  EXPECT_THROW(pool.volume_path(""), std::invalid_argument);
}

}  // namespace
}  // namespace volgate::controller
