// Every flow of the volume service, with a failure injected at each of its tasks: afterwards the
// database status, the quota usage and the pool's files must all agree with what exists. Then
// the same for a controller that dies (a forked child calling _exit mid-flow) and a new one that
// recovers from the journal. Real SQLite, real files; only the failures are injected.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <utility>

#include "backends/file_device.hpp"
#include "controller/api/api_error.hpp"
#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/volume_service.hpp"
#include "crypto/luks_container.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

struct Injected : std::runtime_error {
  Injected() : std::runtime_error("injected failure") {}
};

class ServiceTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("svc-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(dir);
    fs::create_directories(dir);
    images = dir.string() + "-images";  // imageRef takes files from here only
    fs::remove_all(images);
    fs::create_directories(images);
    config = default_config(dir);
    config.image_dirs = {images.string()};
    config.image_upload_dir = images.string();
    config.default_quotas = {{kQuotaVolumes, 5}, {kQuotaSnapshots, 5}, {kQuotaGigabytes, 20}};
    KeyWrap::create_key_file(dir / "master.key");
    open();
  }
  void TearDown() override {
    service.reset();
    store.reset();
    fs::remove_all(dir);
    fs::remove_all(images);
  }

  void open() {
    service.reset();
    store = std::make_unique<SqliteStore>(dir / "c.db");
    std::vector<std::unique_ptr<Pool>> pools;
    for (const auto& pool_config : config.pools) pools.push_back(std::make_unique<FilePool>(pool_config));
    ServiceOptions options;
    options.run_inline = true;
    options.before_task = [this](const std::string& kind, const std::string& task) {
      if (kind == fail_kind && task == fail_task) throw Injected();
      if (kind == race_kind && task == race_task && race) std::exchange(race, nullptr)();
    };
    service = std::make_unique<VolumeService>(config, *store, std::move(pools),
                                              KeyWrap::from_file(dir / "master.key"), options);
  }

  void inject(const std::string& kind, const std::string& task) {
    fail_kind = kind;
    fail_task = task;
  }
  // Runs `other` once, just before `task` of the next `kind` flow: a request racing with it.
  void race_before(const std::string& kind, const std::string& task, std::function<void()> other) {
    race_kind = kind;
    race_task = task;
    race = std::move(other);
  }

  Volume create(uint64_t size, bool encrypted = false) {
    CreateVolumeRequest r;
    r.project = "p";
    r.name = "v";
    r.size_gb = size;
    r.encrypted = encrypted;
    return service->create_volume(r);
  }

  // A volume row as a copy from `source_volid` or `snapshot_id` has it while its data is copied.
  void insert_copy_in_progress(const std::string& source_volid, const std::string& snapshot_id) {
    Volume copy;
    copy.id = "copy-in-progress";
    copy.project = "p";
    copy.size_gb = 1;
    copy.status = VolumeStatus::creating;
    copy.source_volid = source_volid;
    copy.snapshot_id = snapshot_id;
    store->insert_volume(copy);
  }

  QuotaLine usage(const char* resource) { return service->quota_usage("p")[resource]; }

  std::vector<std::string> pool_files() {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir / "pool")) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string volume_file(const std::string& id) { return dir / "pool" / ("volume-" + id + ".img"); }
  uint64_t file_size(const std::string& path) { return fs::file_size(path); }

  fs::path dir;
  fs::path images;
  ControllerConfig config;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> service;
  std::string fail_kind, fail_task;
  std::string race_kind, race_task;
  std::function<void()> race;
};

// ------------------------------------------------------------------------------ create volume

class CreateVolumeRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CreateVolumeRevert, LeavesNoUsageNoFileAndAnHonestStatus) {
  const std::string task = GetParam();
  const bool before_accept = task == "validate" || task == "reserve_quota" || task == "create_db_entry" ||
                             task == "commit_quota";
  inject("create_volume", task);
  if (before_accept) {
    EXPECT_THROW(create(2, true), Injected);
    EXPECT_TRUE(store->list_volumes("p").empty());  // the caller never got an id
  } else {
    Volume v = create(2, true);
    auto after = service->get_volume("p", v.id);
    EXPECT_EQ(after.status, VolumeStatus::error);
    EXPECT_EQ(after.error_message, "injected failure");
    EXPECT_TRUE(after.pool.empty());
    EXPECT_TRUE(after.wrapped_key.empty());
    EXPECT_FALSE(service->progress(v.id));
  }
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 0);
  EXPECT_EQ(usage(kQuotaVolumes).reserved, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  EXPECT_TRUE(pool_files().empty());
  EXPECT_TRUE(store->journal_unfinished().empty());

  // An error volume can be deleted, and that releases nothing twice.
  inject("", "");
  for (const auto& v : store->list_volumes("p")) service->delete_volume("p", v.id);
  EXPECT_TRUE(store->list_volumes("p").empty());
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
  Volume ok = create(2, true);
  EXPECT_EQ(service->get_volume("p", ok.id).status, VolumeStatus::available);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
}

INSTANTIATE_TEST_SUITE_P(EachTask, CreateVolumeRevert,
                         ::testing::Values("validate", "reserve_quota", "create_db_entry", "commit_quota", "schedule",
                                           "generate_key", "create_on_pool", "finish"));

// ------------------------------------------------------------------------------ extend volume

class ExtendVolumeRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ExtendVolumeRevert, GoesBackToAvailableAtTheOldSize) {
  const std::string task = GetParam();
  Volume v = create(2);
  inject("extend_volume", task);
  const bool before_accept = task == "validate" || task == "reserve_quota" || task == "mark_extending";
  if (before_accept)
    EXPECT_THROW(service->extend_volume("p", v.id, 5), Injected);
  else
    service->extend_volume("p", v.id, 5);
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::available);
  EXPECT_EQ(after.size_gb, 2u);
  EXPECT_EQ(file_size(volume_file(v.id)), 2 * kGiB);
  EXPECT_EQ(after.error_message.empty(), before_accept) << after.error_message;
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  EXPECT_TRUE(store->journal_unfinished().empty());

  inject("", "");
  service->extend_volume("p", v.id, 5);
  EXPECT_EQ(service->get_volume("p", v.id).size_gb, 5u);
  EXPECT_EQ(file_size(volume_file(v.id)), 5 * kGiB);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 5);
}

INSTANTIATE_TEST_SUITE_P(EachTask, ExtendVolumeRevert,
                         ::testing::Values("validate", "reserve_quota", "mark_extending", "extend_on_pool",
                                           "commit_quota", "finish"));

// ------------------------------------------------------------------------------ upload to image

std::vector<std::string> names_in(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(directory)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

class UploadVolumeRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(UploadVolumeRevert, LeavesNoImageAndTheVolumeAsItWas) {
  const std::string task = GetParam();
  Volume v = create(1);
  {
    std::fstream f(volume_file(v.id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12345);
    f << "written before the upload";
  }
  UploadImageRequest r{.project = "p", .volume_id = v.id, .image_name = "img"};
  inject("upload_volume", task);
  const bool before_accept = task == "validate" || task == "mark_uploading";
  if (before_accept)
    EXPECT_THROW(service->upload_volume_to_image(r), Injected);
  else
    service->upload_volume_to_image(r);
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::available);
  if (before_accept)
    EXPECT_TRUE(after.error_message.empty()) << after.error_message;
  else
    EXPECT_NE(after.error_message.find("upload to image"), std::string::npos) << after.error_message;
  EXPECT_TRUE(names_in(images).empty());
  EXPECT_FALSE(service->progress(v.id));
  EXPECT_TRUE(store->journal_unfinished().empty());

  // After the last failure point (the image written, then taken back), an upload works. Once:
  // each upload hashes the whole GiB.
  if (task != "finish") return;
  inject("", "");
  const std::string id = service->upload_volume_to_image(r);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
  EXPECT_EQ(names_in(images), (std::vector<std::string>{id, id + ".json"}));
  std::ifstream image(images / id, std::ios::binary), volume(volume_file(v.id), std::ios::binary);
  std::vector<char> a(1 << 20), b(1 << 20);
  bool same = true;
  while (same && image.read(a.data(), a.size()).gcount() > 0) {
    volume.read(b.data(), b.size());
    same = image.gcount() == volume.gcount() && std::equal(a.begin(), a.begin() + image.gcount(), b.begin());
  }
  EXPECT_TRUE(same && volume.read(b.data(), 1).gcount() == 0) << "the image differs from the volume";
  // Holes stay holes: the image allocates a block or so for the one write.
  struct stat st{};
  ASSERT_EQ(::stat((images / id).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kGiB);
  EXPECT_LE(st.st_blocks * 512, 1 << 20);
}

INSTANTIATE_TEST_SUITE_P(EachTask, UploadVolumeRevert,
                         ::testing::Values("validate", "mark_uploading", "write_image", "finish"));

TEST_F(ServiceTest, UploadRefusesAnInUseVolumeWithoutForceAndAVolumeInAnotherState) {
  Volume v = create(1);
  // Attached as a completed attachment leaves it (no gateway here to serve it).
  store->update_volume_attachments(v.id, [&](Store::VolumeAttachments& state) {
    state.attachments.push_back(
        {.id = "a1", .project = "p", .volume_id = v.id, .status = AttachmentStatus::attached});
    state.volume.status = VolumeStatus::in_use;
  });
  UploadImageRequest r{.project = "p", .volume_id = v.id, .image_name = "img"};
  try {
    service->upload_volume_to_image(r);
    ADD_FAILURE() << "an in-use volume was uploaded without force";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.http_status(), 400);
  }
  r.force = true;
  service->upload_volume_to_image(r);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::in_use);
  EXPECT_EQ(names_in(images).size(), 2u);
  store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::extending; });
  try {
    service->upload_volume_to_image(r);
    ADD_FAILURE() << "an extending volume was uploaded";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.http_status(), 409);
  }
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::extending);
}

// ------------------------------------------------------------------------------ delete volume

class DeleteVolumeRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DeleteVolumeRevert, EndsInErrorDeletingWithTheQuotaStillHeldAndCanBeRetried) {
  const std::string task = GetParam();
  Volume v = create(3);
  inject("delete_volume", task);
  const bool before_accept = task == "validate" || task == "mark_deleting";
  if (before_accept) {
    EXPECT_THROW(service->delete_volume("p", v.id), Injected);
    EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
    EXPECT_TRUE(fs::exists(volume_file(v.id)));
  } else {
    service->delete_volume("p", v.id);
    auto after = service->get_volume("p", v.id);
    EXPECT_EQ(after.status, VolumeStatus::error_deleting);
    EXPECT_NE(after.error_message.find("injected failure"), std::string::npos);
  }
  // The usage stays while the volume's storage exists (even half deleted); once the quota is
  // released only the row is left, for the retry to remove.
  const int64_t held = task == "destroy_db_entry" ? 0 : 1;
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 3 * held);
  EXPECT_EQ(usage(kQuotaVolumes).in_use, held);
  EXPECT_TRUE(store->journal_unfinished().empty());

  inject("", "");
  service->delete_volume("p", v.id);
  EXPECT_THROW(service->get_volume("p", v.id), ApiError);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 0);
  EXPECT_TRUE(pool_files().empty());
}

INSTANTIATE_TEST_SUITE_P(EachTask, DeleteVolumeRevert,
                         ::testing::Values("validate", "mark_deleting", "delete_on_pool", "release_quota",
                                           "destroy_db_entry"));

// ------------------------------------------------------------------------------ snapshots

class CreateSnapshotRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CreateSnapshotRevert, LeavesOnlyTheVolumesUsage) {
  const std::string task = GetParam();
  Volume v = create(2);
  inject("create_snapshot", task);
  const bool before_accept = task == "validate" || task == "reserve_quota" || task == "create_db_entry" ||
                             task == "commit_quota";
  if (before_accept) {
    EXPECT_THROW(service->create_snapshot("p", v.id, "s", "", false), Injected);
    EXPECT_TRUE(store->list_snapshots("p").empty());
  } else {
    Snapshot s = service->create_snapshot("p", v.id, "s", "", false);
    EXPECT_EQ(service->get_snapshot("p", s.id).status, SnapshotStatus::error);
  }
  EXPECT_EQ(usage(kQuotaSnapshots).in_use, 0);
  EXPECT_EQ(usage(kQuotaSnapshots).reserved, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
  EXPECT_EQ(pool_files(), std::vector<std::string>{"volume-" + v.id + ".img"});
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
  EXPECT_TRUE(store->journal_unfinished().empty());
}

INSTANTIATE_TEST_SUITE_P(EachTask, CreateSnapshotRevert,
                         ::testing::Values("validate", "reserve_quota", "create_db_entry", "commit_quota",
                                           "create_on_pool", "finish"));

class DeleteSnapshotRevert : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DeleteSnapshotRevert, EndsInErrorDeletingAndCanBeRetried) {
  const std::string task = GetParam();
  Volume v = create(2);
  Snapshot s = service->create_snapshot("p", v.id, "s", "", false);
  inject("delete_snapshot", task);
  if (task == "validate" || task == "mark_deleting") {
    EXPECT_THROW(service->delete_snapshot("p", s.id), Injected);
    EXPECT_EQ(service->get_snapshot("p", s.id).status, SnapshotStatus::available);
  } else {
    service->delete_snapshot("p", s.id);
    EXPECT_EQ(service->get_snapshot("p", s.id).status, SnapshotStatus::error_deleting);
  }
  const int64_t held = task == "destroy_db_entry" ? 0 : 1;
  EXPECT_EQ(usage(kQuotaSnapshots).in_use, held);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2 + 2 * held);
  inject("", "");
  service->delete_snapshot("p", s.id);
  EXPECT_TRUE(store->list_snapshots("p").empty());
  EXPECT_EQ(usage(kQuotaSnapshots).in_use, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
  EXPECT_EQ(pool_files(), std::vector<std::string>{"volume-" + v.id + ".img"});
}

INSTANTIATE_TEST_SUITE_P(EachTask, DeleteSnapshotRevert,
                         ::testing::Values("validate", "mark_deleting", "delete_on_pool", "release_quota",
                                           "destroy_db_entry"));

// ------------------------------------------------------------------------------ happy paths and refusals

void write_pattern(const std::string& path, uint64_t offset, size_t length, unsigned seed) {
  std::vector<char> data(length);
  std::mt19937 gen(seed);
  for (auto& c : data) c = static_cast<char>(gen());
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string read_range(const std::string& path, uint64_t offset, size_t length) {
  std::string data(length, '\0');
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(data.data(), static_cast<std::streamsize>(length));
  return data;
}

TEST_F(ServiceTest, CopiesFromSnapshotVolumeAndImageHoldTheSourceData) {
  Volume v = create(1);
  write_pattern(volume_file(v.id), 4096, 1 << 20, 1);
  write_pattern(volume_file(v.id), kGiB - 8192, 8192, 2);
  Snapshot s = service->create_snapshot("p", v.id, "s", "", false);
  write_pattern(volume_file(v.id), 4096, 4096, 3);  // after the snapshot: not in it

  CreateVolumeRequest r;
  r.project = "p";
  r.snapshot_id = s.id;  // no size: the snapshot's
  Volume from_snap = service->create_volume(r);
  EXPECT_EQ(from_snap.size_gb, 1u);
  EXPECT_EQ(service->get_volume("p", from_snap.id).status, VolumeStatus::available);
  EXPECT_NE(read_range(volume_file(from_snap.id), 4096, 4096), read_range(volume_file(v.id), 4096, 4096));
  EXPECT_EQ(read_range(volume_file(from_snap.id), 8192, 1 << 19), read_range(volume_file(v.id), 8192, 1 << 19));

  CreateVolumeRequest c;
  c.project = "p";
  c.source_volid = v.id;
  c.size_gb = 2;  // a clone may be larger
  Volume clone = service->create_volume(c);
  EXPECT_EQ(file_size(volume_file(clone.id)), 2 * kGiB);
  EXPECT_EQ(read_range(volume_file(clone.id), 0, 1 << 21), read_range(volume_file(v.id), 0, 1 << 21));
  EXPECT_EQ(read_range(volume_file(clone.id), kGiB - 8192, 8192), read_range(volume_file(v.id), kGiB - 8192, 8192));

  std::string image = images / "image.raw";
  { std::ofstream(image).put('\0'); }
  fs::resize_file(image, 3 << 20);
  write_pattern(image, 0, 3 << 20, 9);
  CreateVolumeRequest i;
  i.project = "p";
  i.image = image;
  i.size_gb = 1;
  Volume from_image = service->create_volume(i);
  EXPECT_EQ(read_range(volume_file(from_image.id), 0, 3 << 20), read_range(image, 0, 3 << 20));
  EXPECT_EQ(read_range(volume_file(from_image.id), 3 << 20, 4096), std::string(4096, '\0'));
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 4);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 1 + 1 + 1 + 2 + 1);
}

TEST_F(ServiceTest, EncryptedVolumesAreLuks2OpenedByTheWrappedPassphraseOnly) {
  Volume v = create(1, true);
  auto stored = store->find_volume(v.id);
  ASSERT_TRUE(stored->encrypted);
  ASSERT_FALSE(stored->wrapped_key.empty());
  auto device = backends::FileDevice::open({.path = volume_file(v.id)});
  auto container = crypto::LuksContainer::load(*device);
  EXPECT_EQ(container.info().version, "LUKS2");
  auto passphrase = KeyWrap::from_file(dir / "master.key").unwrap(stored->wrapped_key, v.id);
  EXPECT_NO_THROW(container.unlock(passphrase));
  // The passphrase appears nowhere in the database file.
  std::ifstream db(dir / "c.db", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(db)), {});
  EXPECT_EQ(all.find(std::string(passphrase.chars(), passphrase.size())), std::string::npos);

  // A clone keeps the data's key, wrapped anew for its own id; a plain clone is refused.
  CreateVolumeRequest c;
  c.project = "p";
  c.source_volid = v.id;
  Volume clone = service->create_volume(c);
  auto clone_row = store->find_volume(clone.id);
  EXPECT_TRUE(clone_row->encrypted);
  EXPECT_NE(clone_row->wrapped_key, stored->wrapped_key);
  auto clone_device = backends::FileDevice::open({.path = volume_file(clone.id)});
  EXPECT_NO_THROW(crypto::LuksContainer::load(*clone_device).unlock(passphrase));
  c.encrypted = false;  // the copy of encrypted data cannot be plain
  EXPECT_THROW(service->create_volume(c), ApiError);
  CreateVolumeRequest plain_from_plain;
  plain_from_plain.project = "p";
  plain_from_plain.size_gb = 1;
  Volume plain = service->create_volume(plain_from_plain);
  CreateVolumeRequest encrypted_from_plain;
  encrypted_from_plain.project = "p";
  encrypted_from_plain.source_volid = plain.id;
  encrypted_from_plain.encrypted = true;
  EXPECT_THROW(service->create_volume(encrypted_from_plain), ApiError);
}

TEST_F(ServiceTest, QuotaExhaustionIsRefusedUpFrontAndLeavesNothing) {
  create(10);
  create(10);
  try {
    create(1);
    FAIL();
  } catch (const QuotaExceeded& e) {
    EXPECT_EQ(e.http_status(), 413);
    EXPECT_NE(std::string(e.what()).find("gigabytes"), std::string::npos) << e.what();
  }
  EXPECT_EQ(store->list_volumes("p").size(), 2u);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 20);
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  auto v = store->list_volumes("p").front();
  EXPECT_THROW(service->extend_volume("p", v.id, 11), QuotaExceeded);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
}

TEST_F(ServiceTest, NoValidPoolEndsInErrorWithTheReason) {
  config.pools[0].thin_provisioning = false;  // thick: real free space counts
  config.default_quotas[kQuotaGigabytes] = -1;
  open();
  Volume v = create(1024 * 1024);
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::error);
  EXPECT_NE(after.error_message.find("No valid pool"), std::string::npos) << after.error_message;
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);

  CreateVolumeRequest r;
  r.project = "p";
  r.size_gb = 1;
  r.availability_zone = "mars";
  EXPECT_THROW(service->create_volume(r), ApiError);
}

TEST_F(ServiceTest, IllegalRequestsAreRefusedWithTheRightKind) {
  Volume v = create(1);
  Snapshot s = service->create_snapshot("p", v.id, "s", "", false);
  try {
    service->delete_volume("p", v.id);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.http_status(), 400);  // dependent snapshot
  }
  store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::in_use; });
  EXPECT_THROW(service->delete_volume("p", v.id), IllegalTransition);
  EXPECT_THROW(service->create_snapshot("p", v.id, "s2", "", false), ApiError);
  EXPECT_NO_THROW(service->create_snapshot("p", v.id, "s2", "", true));  // force
  store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::deleting; });
  EXPECT_THROW(service->extend_volume("p", v.id, 2), IllegalTransition);
  EXPECT_THROW(service->get_volume("other-project", v.id), ApiError);
  EXPECT_THROW(service->get_snapshot("other-project", s.id), ApiError);
  CreateVolumeRequest two;
  two.project = "p";
  two.snapshot_id = s.id;
  two.source_volid = v.id;
  EXPECT_THROW(service->create_volume(two), ApiError);
}

TEST_F(ServiceTest, ASnapshotRacingADeleteNeverLosesItsVolume) {
  // The snapshot lands after the delete validated: the delete is refused, the volume kept.
  Volume v = create(1);
  std::optional<Snapshot> snap;
  race_before("delete_volume", "mark_deleting", [&] { snap = service->create_snapshot("p", v.id, "s", "", false); });
  EXPECT_THROW(service->delete_volume("p", v.id), ApiError);
  ASSERT_TRUE(snap);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
  EXPECT_EQ(service->get_snapshot("p", snap->id).status, SnapshotStatus::available);
  service->delete_snapshot("p", snap->id);

  // The delete lands after the snapshot validated: the snapshot is refused and leaves nothing.
  race_before("create_snapshot", "create_db_entry", [&] { service->delete_volume("p", v.id); });
  EXPECT_THROW(service->create_snapshot("p", v.id, "s2", "", false), ApiError);
  EXPECT_FALSE(store->find_volume(v.id));
  EXPECT_TRUE(store->list_snapshots("p").empty());
  EXPECT_EQ(usage(kQuotaSnapshots).in_use + usage(kQuotaSnapshots).reserved, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use + usage(kQuotaGigabytes).reserved, 0);
  EXPECT_TRUE(pool_files().empty());
}

TEST_F(ServiceTest, ACopyRacingADeleteOfItsSourceNeverLosesTheSource) {
  Volume v = create(1);
  // A copy starts after the delete validated: the delete is refused and the source kept as it was.
  race_before("delete_volume", "mark_deleting", [&] { insert_copy_in_progress(v.id, ""); });
  EXPECT_THROW(service->delete_volume("p", v.id), ApiError);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
  store->delete_volume("copy-in-progress");

  // The delete marks the source after the copy validated: the copy is refused.
  CreateVolumeRequest clone;
  clone.project = "p";
  clone.source_volid = v.id;
  race_before("create_volume", "create_db_entry", [&] {
    store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::deleting; });
  });
  EXPECT_THROW(service->create_volume(clone), ApiError);
  EXPECT_EQ(store->list_volumes("p").size(), 1u);
  store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::available; });

  // The delete finishes after the copy validated: the copy is refused and leaves nothing.
  race_before("create_volume", "create_db_entry", [&] { service->delete_volume("p", v.id); });
  EXPECT_THROW(service->create_volume(clone), ApiError);
  EXPECT_TRUE(store->list_volumes("p").empty());
  EXPECT_EQ(usage(kQuotaVolumes).in_use + usage(kQuotaVolumes).reserved, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use + usage(kQuotaGigabytes).reserved, 0);
  EXPECT_TRUE(pool_files().empty());
}

TEST_F(ServiceTest, AVolumeFromASnapshotRacingItsDeleteNeverLosesTheSnapshot) {
  Volume v = create(1);
  Snapshot snap = service->create_snapshot("p", v.id, "s", "", false);

  // A volume from it starts after the snapshot's delete validated: the delete is refused and
  // the snapshot stays available (not error_deleting: nothing was attempted).
  race_before("delete_snapshot", "mark_deleting", [&] { insert_copy_in_progress("", snap.id); });
  EXPECT_THROW(service->delete_snapshot("p", snap.id), ApiError);
  EXPECT_EQ(service->get_snapshot("p", snap.id).status, SnapshotStatus::available);
  store->delete_volume("copy-in-progress");

  // The delete marks the snapshot after the new volume validated: the volume is refused.
  CreateVolumeRequest from_snap;
  from_snap.project = "p";
  from_snap.snapshot_id = snap.id;
  race_before("create_volume", "create_db_entry", [&] {
    store->update_snapshot(snap.id, [](Snapshot& x) { x.status = SnapshotStatus::deleting; });
  });
  EXPECT_THROW(service->create_volume(from_snap), ApiError);
  EXPECT_EQ(store->list_volumes("p").size(), 1u);
  store->update_snapshot(snap.id, [](Snapshot& x) { x.status = SnapshotStatus::available; });

  // The delete finishes after the new volume validated: the volume is refused and leaves nothing.
  race_before("create_volume", "create_db_entry", [&] { service->delete_snapshot("p", snap.id); });
  EXPECT_THROW(service->create_volume(from_snap), ApiError);
  EXPECT_FALSE(store->find_snapshot(snap.id));
  EXPECT_EQ(store->list_volumes("p").size(), 1u);  // the original only
  EXPECT_EQ(usage(kQuotaVolumes).in_use + usage(kQuotaVolumes).reserved, 1);
  EXPECT_EQ(pool_files().size(), 1u);
}

TEST_F(ServiceTest, TwoRacingExtendsNeverLeaveSizeFileAndQuotaApart) {
  Volume v = create(2);
  // Another extend finishes between this one's validate and its mark: this one is refused.
  race_before("extend_volume", "mark_extending", [&] { service->extend_volume("p", v.id, 3); });
  EXPECT_THROW(service->extend_volume("p", v.id, 4), ApiError);
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::available);
  EXPECT_EQ(after.size_gb, 3u);
  EXPECT_EQ(file_size(volume_file(v.id)), 3 * kGiB);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 3);
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  // A second delete racing the first past validate is refused and leaves the first's mark.
  race_before("delete_volume", "mark_deleting", [&] {
    store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::deleting; });
  });
  EXPECT_THROW(service->delete_volume("p", v.id), IllegalTransition);
  EXPECT_EQ(store->find_volume(v.id)->status, VolumeStatus::deleting);
}

TEST_F(ServiceTest, AForceDeleteSkipsTheStatusButNeverAnOperationInProgress) {
  Volume v = create(1);
  // An operation that started before the force-delete marked the volume (its journal row is
  // there): the force-delete is refused and leaves the status it found.
  race_before("delete_volume", "mark_deleting", [&] {
    store->journal_write(FlowRecord{.id = "other", .kind = "extend_volume", .resource_id = v.id});
  });
  EXPECT_THROW(service->delete_volume("p", v.id, true), ApiError);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
  EXPECT_THROW(service->reset_volume_status("p", v.id, VolumeStatus::error, false), ApiError);
  store->journal_remove("other");

  // A status no plain delete accepts: only the forced one deletes it, quota and file included.
  service->reset_volume_status("p", v.id, VolumeStatus::attaching, false);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::attaching);
  EXPECT_THROW(service->delete_volume("p", v.id), IllegalTransition);
  service->delete_volume("p", v.id, true);
  EXPECT_FALSE(store->find_volume(v.id));
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
  EXPECT_TRUE(pool_files().empty());
}

TEST_F(ServiceTest, AResetClearsTheErrorMessageOfAStatusThatIsNoLongerAnError) {
  Volume v = create(1);
  store->update_volume(v.id, [](Volume& x) {
    x.status = VolumeStatus::error;
    x.error_message = "the pool was unreachable";
  });
  service->reset_volume_status("p", v.id, VolumeStatus::error_deleting, false);
  EXPECT_EQ(service->get_volume("p", v.id).error_message, "the pool was unreachable");
  service->reset_volume_status("p", v.id, VolumeStatus::available, false);
  EXPECT_EQ(service->get_volume("p", v.id).error_message, "");
  // Without a status, detaching settles it from the attachments (none: available).
  service->reset_volume_status("p", v.id, std::nullopt, true);
  EXPECT_EQ(service->get_volume("p", v.id).status, VolumeStatus::available);
}

// imageRef names a regular file beneath an image directory, reached without a symlink; anything
// else gets one and the same answer, so it cannot probe for files elsewhere.
TEST_F(ServiceTest, OnlyRegularFilesBeneathAnImageDirectoryAreImages) {
  Volume v = create(1);
  fs::create_symlink(dir / "master.key", images / "innocent.raw");
  fs::create_directories(images / "sub");
  fs::create_symlink("/etc", images / "etc");
  ASSERT_EQ(::mkfifo((images / "fifo.raw").c_str(), 0600), 0);
  const std::string refused_message = "is not a readable regular file in the controller's image directories";
  for (const std::string& path :
       {(dir / "master.key").string(), (dir / "c.db").string(), volume_file(v.id), std::string("/etc/passwd"),
        (images / "innocent.raw").string(), std::string("innocent.raw"), (images / "../etc/passwd").string(),
        std::string("../../../../etc/passwd"), std::string("sub/../../x"), std::string("etc/passwd"),
        (images / "fifo.raw").string(), (images / "sub").string(), std::string("sub"), std::string("missing.raw"),
        std::string("/nonexistent/file")}) {
    CreateVolumeRequest r;
    r.project = "p";
    r.image = path;
    r.size_gb = 1;
    try {
      service->create_volume(r);
      ADD_FAILURE() << path << " was accepted as an image";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.http_status(), 400) << path;
      EXPECT_EQ(std::string(e.what()), "imageRef '" + path + "' " + refused_message + ".") << e.what();
    }
  }
  EXPECT_EQ(store->list_volumes("p").size(), 1u);
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 1);
}

TEST_F(ServiceTest, AnImageIsNamedByItsPathOrRelativeToTheImageDirectory) {
  fs::create_directories(images / "sub");
  std::string image = images / "sub" / "image.raw";
  { std::ofstream(image) << std::string(8192, 'i'); }
  for (const std::string& ref : {image, std::string("sub/image.raw"), std::string("./sub//image.raw")}) {
    CreateVolumeRequest r;
    r.project = "p";
    r.image = ref;
    Volume created = service->create_volume(r);
    EXPECT_EQ(store->find_volume(created.id)->status, VolumeStatus::available) << ref;
    EXPECT_EQ(read_range(volume_file(created.id), 0, 8192), std::string(8192, 'i')) << ref;
  }
}

// The file is opened when the request arrives: a path swapped for a symlink to a secret after
// that (before the copy) still gives the file that was checked.
TEST_F(ServiceTest, AnImageSwappedAfterTheRequestIsNotFollowed) {
  std::string image = images / "image.raw";
  { std::ofstream(image) << std::string(4096, 'g'); }
  { std::ofstream(dir / "secret") << std::string(4096, 's'); }
  race_before("create_volume", "create_on_pool", [&] {
    fs::remove(image);
    fs::create_symlink(dir / "secret", image);
  });
  CreateVolumeRequest r;
  r.project = "p";
  r.image = image;
  Volume created = service->create_volume(r);
  ASSERT_EQ(store->find_volume(created.id)->status, VolumeStatus::available);
  EXPECT_EQ(read_range(volume_file(created.id), 0, 4096), std::string(4096, 'g'));
}

TEST_F(ServiceTest, ACopyStaysInItsSourcesZone) {
  PoolConfig second = config.pools[0];
  second.name = "zone2-pool";
  second.directory = dir / "pool2";
  second.availability_zone = "zone2";
  config.pools.push_back(second);
  open();
  CreateVolumeRequest r;
  r.project = "p";
  r.size_gb = 1;
  r.availability_zone = "zone2";
  Volume source = service->create_volume(r);
  ASSERT_EQ(source.pool, "zone2-pool");
  Snapshot snap = service->create_snapshot("p", source.id, "s", "", false);
  CreateVolumeRequest from_snap;
  from_snap.project = "p";
  from_snap.snapshot_id = snap.id;
  Volume copy = service->get_volume("p", service->create_volume(from_snap).id);
  EXPECT_EQ(copy.availability_zone, "zone2");
  EXPECT_EQ(copy.status, VolumeStatus::available) << copy.error_message;
  CreateVolumeRequest clone;
  clone.project = "p";
  clone.source_volid = source.id;
  EXPECT_EQ(service->get_volume("p", service->create_volume(clone).id).availability_zone, "zone2");
}

TEST_F(ServiceTest, AnInUseVolumeGrowsAndStaysInUse) {
  Volume v = create(1);
  store->update_volume(v.id, [](Volume& x) { x.status = VolumeStatus::in_use; });
  service->extend_volume("p", v.id, 2);
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::in_use);
  EXPECT_EQ(after.size_gb, 2u);
  inject("extend_volume", "extend_on_pool");
  service->extend_volume("p", v.id, 3);
  after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::in_use);
  EXPECT_EQ(after.size_gb, 2u);
}

// ------------------------------------------------------------------------------ crash recovery

// Runs `body` in a child process whose flows die (_exit, no revert, no cleanup) at `task`.
template <class Body>
void crash_at(ServiceTest& t, const std::string& kind, const std::string& task, Body body) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SqliteStore store(t.dir / "c.db");
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(t.config.pools[0]));
    ServiceOptions options;
    options.run_inline = true;
    options.before_task = [&](const std::string& k, const std::string& name) {
      if (k == kind && name == task) ::_exit(0);
    };
    VolumeService service(t.config, store, std::move(pools), KeyWrap::from_file(t.dir / "master.key"), options);
    try {
      body(service);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(4);  // the crash point was never reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the child did not die at " << task;
}

class CreateVolumeCrash : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

// Dying before the last task reverts the half-done create. Dying in the last task, or after it
// but before the journal entry is cleared, leaves the work done: a restarted controller must
// finish the flow, not undo a volume it may have reported.
TEST_P(CreateVolumeCrash, ARestartedControllerRevertsOrFinishesTheCreate) {
  const bool finished = GetParam() == "finish" || GetParam() == kAfterLastTask;
  service.reset();
  store.reset();
  crash_at(*this, "create_volume", GetParam(), [](VolumeService& s) {
    CreateVolumeRequest r;
    r.project = "p";
    r.size_gb = 2;
    r.encrypted = true;
    s.create_volume(r);
  });
  open();
  ASSERT_EQ(store->journal_unfinished().size(), 1u);
  service->recover();
  EXPECT_TRUE(store->journal_unfinished().empty());
  auto volumes = store->list_volumes("p");
  ASSERT_EQ(volumes.size(), 1u);
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  if (finished) {
    EXPECT_EQ(volumes[0].status, VolumeStatus::available);
    EXPECT_EQ(volumes[0].error_message, "");
    EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
    EXPECT_EQ(file_size(volume_file(volumes[0].id)), 2 * kGiB);
  } else {
    EXPECT_EQ(volumes[0].status, VolumeStatus::error);
    EXPECT_NE(volumes[0].error_message.find("stopped"), std::string::npos);
    EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
    EXPECT_TRUE(pool_files().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(EachBackgroundTask, CreateVolumeCrash,
                         ::testing::Values("schedule", "generate_key", "create_on_pool", "finish", kAfterLastTask));

class DeleteVolumeCrash : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DeleteVolumeCrash, ARestartedControllerFinishesTheDelete) {
  Volume v = create(2);
  service.reset();
  store.reset();
  crash_at(*this, "delete_volume", GetParam(), [&](VolumeService& s) { s.delete_volume("p", v.id); });
  open();
  service->recover();
  EXPECT_FALSE(store->find_volume(v.id));
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 0);
  EXPECT_EQ(usage(kQuotaVolumes).in_use, 0);
  EXPECT_TRUE(pool_files().empty());
  EXPECT_TRUE(store->journal_unfinished().empty());
}

INSTANTIATE_TEST_SUITE_P(EachBackgroundTask, DeleteVolumeCrash,
                         ::testing::Values("delete_on_pool", "release_quota", "destroy_db_entry", kAfterLastTask));

class ExtendVolumeCrash : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

// Dying before the last task reverts the extend; in it or after it (the work done) finishes it.
TEST_P(ExtendVolumeCrash, ARestartedControllerRevertsOrFinishesTheExtend) {
  const bool finished = GetParam() == "finish" || GetParam() == kAfterLastTask;
  const uint64_t size_gb = finished ? 4 : 2;
  Volume v = create(2);
  service.reset();
  store.reset();
  crash_at(*this, "extend_volume", GetParam(), [&](VolumeService& s) { s.extend_volume("p", v.id, 4); });
  open();
  service->recover();
  auto after = service->get_volume("p", v.id);
  EXPECT_EQ(after.status, VolumeStatus::available);
  EXPECT_EQ(after.size_gb, size_gb);
  EXPECT_EQ(file_size(volume_file(v.id)), size_gb * kGiB);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, static_cast<int64_t>(size_gb));
  EXPECT_EQ(usage(kQuotaGigabytes).reserved, 0);
  EXPECT_TRUE(store->journal_unfinished().empty());
}

INSTANTIATE_TEST_SUITE_P(EachBackgroundTask, ExtendVolumeCrash,
                         ::testing::Values("extend_on_pool", "commit_quota", "finish", kAfterLastTask));

}  // namespace
}  // namespace volgate::controller

namespace volgate::controller {
namespace {

class CreateSnapshotCrash : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

// Dying before the last task reverts the snapshot (error, no quota, no file); in it or after it
// finishes it.
TEST_P(CreateSnapshotCrash, ARestartedControllerRevertsOrFinishesTheSnapshot) {
  const bool finished = GetParam() == "finish" || GetParam() == kAfterLastTask;
  Volume v = create(2);
  service.reset();
  store.reset();
  crash_at(*this, "create_snapshot", GetParam(),
           [&](VolumeService& s) { s.create_snapshot("p", v.id, "s", "", false); });
  open();
  service->recover();
  auto snaps = store->list_snapshots("p");
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].status, finished ? SnapshotStatus::available : SnapshotStatus::error);
  EXPECT_EQ(usage(kQuotaSnapshots).in_use, finished ? 1 : 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, finished ? 4 : 2);
  EXPECT_EQ(pool_files().size(), finished ? 2u : 1u);
  EXPECT_TRUE(store->journal_unfinished().empty());
  service->delete_snapshot("p", snaps[0].id);
  service->delete_volume("p", v.id);
  EXPECT_TRUE(pool_files().empty());
}

INSTANTIATE_TEST_SUITE_P(EachBackgroundTask, CreateSnapshotCrash,
                         ::testing::Values("create_on_pool", "finish", kAfterLastTask));

class DeleteSnapshotCrash : public ServiceTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DeleteSnapshotCrash, ARestartedControllerFinishesTheDelete) {
  Volume v = create(2);
  Snapshot snap = service->create_snapshot("p", v.id, "s", "", false);
  service.reset();
  store.reset();
  crash_at(*this, "delete_snapshot", GetParam(), [&](VolumeService& s) { s.delete_snapshot("p", snap.id); });
  open();
  service->recover();
  EXPECT_TRUE(store->list_snapshots("p").empty());
  EXPECT_EQ(usage(kQuotaSnapshots).in_use, 0);
  EXPECT_EQ(usage(kQuotaGigabytes).in_use, 2);
  EXPECT_EQ(pool_files(), std::vector<std::string>{"volume-" + v.id + ".img"});
  EXPECT_TRUE(store->journal_unfinished().empty());
}

INSTANTIATE_TEST_SUITE_P(EachBackgroundTask, DeleteSnapshotCrash,
                         ::testing::Values("delete_on_pool", "release_quota", "destroy_db_entry", kAfterLastTask));

}  // namespace
}  // namespace volgate::controller
