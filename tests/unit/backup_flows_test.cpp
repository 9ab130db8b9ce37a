// The backup flows of the volume service with a failure injected at each of their tasks:
// afterwards the backup's and the volume's statuses, the quotas, the repository and the pool's
// files must agree with what exists, and the same request without the failure must work. Real
// SQLite, real files, a real repository; only the failures are injected.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

struct Injected : std::runtime_error {
  Injected() : std::runtime_error("injected failure") {}
};

class BackupFlowTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("backup-flows-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(dir);
    fs::create_directories(dir);
    config = default_config(dir);
    config.default_quotas = {{kQuotaVolumes, 5}, {kQuotaSnapshots, 5}, {kQuotaGigabytes, 20},
                             {kQuotaBackups, 5}, {kQuotaBackupGigabytes, 20}};
    KeyWrap::create_key_file(dir / "master.key");
    store = std::make_unique<SqliteStore>(dir / "c.db");
    std::vector<std::unique_ptr<Pool>> pools;
    for (const auto& pool_config : config.pools) pools.push_back(std::make_unique<FilePool>(pool_config));
    ServiceOptions options;
    options.run_inline = true;
    options.before_task = [this](const std::string& kind, const std::string& task) {
      if (kind == fail_kind && task == fail_task) throw Injected();
    };
    service = std::make_unique<VolumeService>(config, *store, std::move(pools),
                                              KeyWrap::from_file(dir / "master.key"), options);
    volume = create("source");
    std::ofstream(volume_file(volume), std::ios::in | std::ios::out | std::ios::binary)
        << std::string(3 << 20, 'x');  // data in the first chunk
  }
  void TearDown() override {
    service.reset();
    store.reset();
    fs::remove_all(dir);
  }

  std::string create(const std::string& name) {
    CreateVolumeRequest r;
    r.project = "p";
    r.name = name;
    r.size_gb = 1;
    return service->create_volume(r).id;
  }
  void inject(const std::string& kind, const std::string& task) {
    fail_kind = kind;
    fail_task = task;
  }
  QuotaLine usage(const char* resource) { return service->quota_usage("p")[resource]; }
  std::string volume_file(const std::string& id) { return dir / "pool" / ("volume-" + id + ".img"); }
  size_t count(const fs::path& d, const std::string& suffix) {
    size_t n = 0;
    if (!fs::exists(d)) return 0;
    for (const auto& e : fs::recursive_directory_iterator(d))
      if (e.is_regular_file() && e.path().string().ends_with(suffix) &&
          e.path().string().find("/.") == std::string::npos)
        ++n;
    return n;
  }
  size_t manifests() { return count(dir / "backups" / "manifests", ".json"); }
  size_t chunks() { return count(dir / "backups" / "chunks", ""); }
  size_t pool_files(const std::string& prefix) {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir / "pool"))
      if (e.path().filename().string().starts_with(prefix)) ++n;
    return n;
  }
  Backup backup() { return service->create_backup("p", volume, "b", "", false, false); }

  fs::path dir;
  ControllerConfig config;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> service;
  std::string fail_kind, fail_task;
  std::string volume;
};

class CreateBackupRevert : public BackupFlowTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CreateBackupRevert, LeavesTheVolumeAvailableAndNoDataOrUsage) {
  const std::string task = GetParam();
  const bool before_accept = task == "validate" || task == "reserve_quota" || task == "create_db_entry" ||
                             task == "mark_volume" || task == "commit_quota";
  inject("create_backup", task);
  if (before_accept) {
    EXPECT_THROW(backup(), Injected);
    EXPECT_TRUE(store->list_backups("p").empty());  // the caller never got an id
  } else {
    Backup b = backup();
    auto after = service->get_backup("p", b.id);
    EXPECT_EQ(after.status, BackupStatus::error);
    EXPECT_EQ(after.error_message, "injected failure");
  }
  EXPECT_EQ(service->get_volume("p", volume).status, VolumeStatus::available);
  EXPECT_EQ(usage(kQuotaBackups).in_use, 0);
  EXPECT_EQ(usage(kQuotaBackups).reserved, 0);
  EXPECT_EQ(usage(kQuotaBackupGigabytes).in_use, 0);
  EXPECT_EQ(manifests(), 0u);
  EXPECT_EQ(chunks(), 0u);
  EXPECT_EQ(pool_files("snapshot-"), 0u);
  EXPECT_TRUE(store->journal_unfinished().empty());

  inject("", "");
  for (const auto& b : store->list_backups("p")) service->delete_backup("p", b.id);
  EXPECT_TRUE(store->list_backups("p").empty()) << "an error backup can be deleted";
  Backup ok = backup();
  EXPECT_EQ(service->get_backup("p", ok.id).status, BackupStatus::available);
  EXPECT_EQ(service->get_backup("p", ok.id).object_count, 1u);
  EXPECT_EQ(usage(kQuotaBackups).in_use, 1);
  EXPECT_EQ(manifests(), 1u);
  EXPECT_EQ(chunks(), 1u);
}

INSTANTIATE_TEST_SUITE_P(EachTask, CreateBackupRevert,
                         ::testing::Values("validate", "reserve_quota", "create_db_entry", "mark_volume",
                                           "commit_quota", "take_snapshot", "copy", "finish"));

class RestoreBackupRevert : public BackupFlowTest,
                            public ::testing::WithParamInterface<std::tuple<std::string, bool>> {};

TEST_P(RestoreBackupRevert, LeavesTheBackupAvailableAndTheTargetHonest) {
  const auto& [task, to_new_volume] = GetParam();
  const std::string backup_id = backup().id;
  const std::string existing = to_new_volume ? std::string() : create("target");
  const int64_t volumes_before = usage(kQuotaVolumes).in_use;
  const bool before_accept = task == "validate" || task == "reserve_quota" || task == "create_target" ||
                             task == "mark_restoring" || task == "commit_quota";
  inject("restore_backup", task);
  std::string target;
  if (before_accept)
    EXPECT_THROW(service->restore_backup("p", backup_id, existing, "r"), Injected);
  else
    target = service->restore_backup("p", backup_id, existing, "r");
  auto b = service->get_backup("p", backup_id);
  EXPECT_EQ(b.status, BackupStatus::available);
  EXPECT_TRUE(b.restore_volume_id.empty());
  EXPECT_EQ(b.error_message.empty(), before_accept) << b.error_message;
  if (to_new_volume) {
    if (!target.empty()) {
      EXPECT_FALSE(store->find_volume(target)) << "a failed restore's new volume is deleted";
    }
    EXPECT_EQ(store->list_volumes("p").size(), 1u);
    EXPECT_EQ(pool_files("volume-"), 1u);
  } else {
    auto v = service->get_volume("p", existing);
    EXPECT_EQ(v.status, before_accept ? VolumeStatus::available : VolumeStatus::error) << to_string(v.status);
  }
  EXPECT_EQ(usage(kQuotaVolumes).in_use, volumes_before);
  EXPECT_EQ(usage(kQuotaVolumes).reserved, 0);
  EXPECT_TRUE(store->journal_unfinished().empty());

  inject("", "");
  if (!existing.empty() && service->get_volume("p", existing).status == VolumeStatus::error) return;
  const std::string ok = service->restore_backup("p", backup_id, existing, "r");
  EXPECT_EQ(service->get_volume("p", ok).status, VolumeStatus::available);
  std::ifstream restored(volume_file(ok), std::ios::binary);
  std::string head(3 << 20, '\0');
  restored.read(head.data(), static_cast<std::streamsize>(head.size()));
  EXPECT_EQ(head, std::string(3 << 20, 'x'));
}

INSTANTIATE_TEST_SUITE_P(EachTask, RestoreBackupRevert,
                         ::testing::Combine(::testing::Values("validate", "reserve_quota", "create_target",
                                                              "mark_restoring", "commit_quota", "create_on_pool",
                                                              "copy", "finish"),
                                            ::testing::Bool()));

TEST_F(BackupFlowTest, AFailedDeleteEndsInErrorAndCanBeRetried) {
  const std::string id = backup().id;
  inject("delete_backup", "remove_data");
  service->delete_backup("p", id);
  auto b = service->get_backup("p", id);
  EXPECT_EQ(b.status, BackupStatus::error);
  EXPECT_NE(b.error_message.find("injected failure"), std::string::npos) << b.error_message;
  EXPECT_EQ(usage(kQuotaBackups).in_use, 1);
  inject("", "");
  service->delete_backup("p", id);
  EXPECT_FALSE(store->find_backup(id));
  EXPECT_EQ(usage(kQuotaBackups).in_use, 0);
  EXPECT_EQ(manifests(), 0u);
  EXPECT_EQ(chunks(), 0u);
}

TEST_F(BackupFlowTest, AVolumeBeingBackedUpCannotBeDeletedOrAttached) {
  // The volume as the flow marks it while it reads it: what is refused meanwhile.
  store->update_volume(volume, [](Volume& v) { v.status = VolumeStatus::backing_up; });
  EXPECT_THROW(service->delete_volume("p", volume), std::exception);
  EXPECT_THROW(service->reserve_volume("p", volume), std::exception);
  EXPECT_THROW(service->create_backup("p", volume, "", "", false, false), std::exception);
  store->update_volume(volume, [](Volume& v) { v.status = VolumeStatus::available; });
  EXPECT_EQ(service->get_backup("p", backup().id).status, BackupStatus::available);
}

}  // namespace
}  // namespace volgate::controller
