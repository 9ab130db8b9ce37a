// SqliteStore: schema migrations, WAL, atomic read-change-write, quota accounting, journal.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include "controller/api/api_error.hpp"
#include "controller/store/sqlite_store.hpp"

namespace volgate::controller {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("store-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    path = dir / "c.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  static Volume volume(const std::string& id, const std::string& project = "p") {
    Volume v;
    v.id = id;
    v.project = project;
    v.name = "n-" + id;
    v.size_gb = 3;
    v.availability_zone = "nova";
    v.volume_type = "default";
    return v;
  }

  std::filesystem::path dir;
  std::string path;
  const QuotaDeltas defaults{{kQuotaVolumes, 2}, {kQuotaSnapshots, 5}, {kQuotaGigabytes, 10}};
};

TEST_F(SqliteStoreTest, OpensInWalModeAtTheLatestSchema) {
  SqliteStore store(path);
  EXPECT_EQ(store.journal_mode(), "wal");
  EXPECT_EQ(store.schema_version(), SqliteStore::latest_schema_version());
  EXPECT_GE(SqliteStore::latest_schema_version(), 2);
}

TEST_F(SqliteStoreTest, MigratesAnOlderDatabaseKeepingItsRows) {
  {
    SqliteStore v1(path, 1);
    EXPECT_EQ(v1.schema_version(), 1);
  }
  // A row written by a version-1 controller (no error_message column yet).
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT INTO volumes VALUES ('old', 'p', 'legacy', '', 7, 'available', 'nova', 'default', "
                         "'pool1', '', '', '', 0, NULL, '2026-01-01T00:00:00', '2026-01-01T00:00:00')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);

  SqliteStore latest(path);
  EXPECT_EQ(latest.schema_version(), SqliteStore::latest_schema_version());
  auto v = latest.find_volume("old");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->name, "legacy");
  EXPECT_EQ(v->size_gb, 7u);
  EXPECT_EQ(v->status, VolumeStatus::available);
  EXPECT_EQ(v->error_message, "");
  // The new table works.
  latest.journal_write({.id = "f", .kind = "create_volume", .resource_id = "old", .context = "{}"});
  EXPECT_EQ(latest.journal_unfinished().size(), 1u);
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromANewerVolgate) {
  { SqliteStore store(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "INSERT INTO schema_version VALUES (999, 'future')", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  try {
    SqliteStore again(path);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
}

TEST_F(SqliteStoreTest, VolumesRoundTripAndUpdatesAreAllOrNothing) {
  SqliteStore store(path);
  Volume v = volume("a");
  v.wrapped_key = {1, 2, 3, 0, 4};
  v.encrypted = true;
  store.insert_volume(v);
  store.insert_volume(volume("b", "other"));
  auto got = store.find_volume("a");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->wrapped_key, v.wrapped_key);
  EXPECT_TRUE(got->encrypted);
  EXPECT_FALSE(got->created_at.empty());
  EXPECT_EQ(store.list_volumes("p").size(), 1u);
  EXPECT_EQ(store.all_volumes().size(), 2u);

  Volume changed = store.update_volume("a", [](Volume& x) { x.status = VolumeStatus::available; });
  EXPECT_EQ(changed.status, VolumeStatus::available);
  EXPECT_THROW(store.update_volume("a", [](Volume& x) {
                 x.size_gb = 99;
                 require_transition("volume a", x.status, VolumeStatus::in_use);
               }),
               IllegalTransition);
  EXPECT_EQ(store.find_volume("a")->size_gb, 3u);  // the throw left the row as it was
  EXPECT_THROW(store.update_volume("missing", [](Volume&) {}), ApiError);
  store.delete_volume("a");
  EXPECT_FALSE(store.find_volume("a"));
}

TEST_F(SqliteStoreTest, QuotaReservationsCountUntilCommittedOrRolledBack) {
  SqliteStore store(path);
  store.reserve_quota("r1", "p", {{kQuotaVolumes, 1}, {kQuotaGigabytes, 6}}, defaults);
  auto u = store.quota_usage("p", defaults);
  EXPECT_EQ(u[kQuotaGigabytes].reserved, 6);
  EXPECT_EQ(u[kQuotaGigabytes].in_use, 0);
  // 6 reserved + 5 > 10
  EXPECT_THROW(store.reserve_quota("r2", "p", {{kQuotaGigabytes, 5}}, defaults), QuotaExceeded);
  EXPECT_EQ(store.quota_usage("p", defaults)[kQuotaGigabytes].reserved, 6);  // nothing half-reserved
  store.commit_quota("r1", "vol-a");
  store.commit_quota("r1", "vol-a");  // replayed after a crash: no double count
  u = store.quota_usage("p", defaults);
  EXPECT_EQ(u[kQuotaGigabytes].in_use, 6);
  EXPECT_EQ(u[kQuotaGigabytes].reserved, 0);
  EXPECT_EQ(u[kQuotaVolumes].in_use, 1);

  store.reserve_quota("r3", "p", {{kQuotaGigabytes, 4}}, defaults);  // an extend of vol-a
  store.commit_quota("r3", "vol-a");
  EXPECT_EQ(store.quota_usage("p", defaults)[kQuotaGigabytes].in_use, 10);
  store.uncommit_quota("r3");
  EXPECT_EQ(store.quota_usage("p", defaults)[kQuotaGigabytes].in_use, 6);
  store.release_quota("vol-a");
  store.release_quota("vol-a");
  u = store.quota_usage("p", defaults);
  EXPECT_EQ(u[kQuotaGigabytes].in_use, 0);
  EXPECT_EQ(u[kQuotaVolumes].in_use, 0);

  store.reserve_quota("r4", "p", {{kQuotaVolumes, 2}}, defaults);
  store.rollback_quota("r4");
  EXPECT_EQ(store.quota_usage("p", defaults)[kQuotaVolumes].reserved, 0);
  // Other projects are not affected, and per-project limits override the defaults.
  store.set_quota_limit("q", kQuotaVolumes, 0);
  EXPECT_THROW(store.reserve_quota("r5", "q", {{kQuotaVolumes, 1}}, defaults), QuotaExceeded);
  store.set_quota_limit("q", kQuotaVolumes, -1);
  store.reserve_quota("r6", "q", {{kQuotaVolumes, 1000}}, defaults);
  EXPECT_EQ(store.quota_usage("q", defaults)[kQuotaVolumes].limit, -1);
}

TEST_F(SqliteStoreTest, TwoConnectionsShareTheFile) {
  SqliteStore a(path);
  SqliteStore b(path);
  a.insert_volume(volume("x"));
  EXPECT_TRUE(b.find_volume("x"));
  b.reserve_quota("r", "p", {{kQuotaVolumes, 2}}, defaults);
  EXPECT_THROW(a.reserve_quota("s", "p", {{kQuotaVolumes, 1}}, defaults), QuotaExceeded);
}

TEST_F(SqliteStoreTest, JournalKeepsUnfinishedFlowsInOrder) {
  SqliteStore store(path);
  store.journal_write({.id = "1", .kind = "create_volume", .resource_id = "v1", .task = 0, .context = "{}"});
  store.journal_write({.id = "2", .kind = "delete_volume", .resource_id = "v2", .task = 1, .context = "{}"});
  store.journal_write({.id = "1", .kind = "create_volume", .resource_id = "v1",
                       .phase = FlowRecord::Phase::reverting, .task = 5, .context = R"({"a":1})"});
  auto rows = store.journal_unfinished();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, "1");
  EXPECT_EQ(rows[0].task, 5);
  EXPECT_EQ(rows[0].phase, FlowRecord::Phase::reverting);
  EXPECT_EQ(rows[0].context, R"({"a":1})");
  store.journal_remove("1");
  EXPECT_EQ(store.journal_unfinished().size(), 1u);
}

TEST_F(SqliteStoreTest, AMappingReservesItsDeviceNameAndVolumeOnItsServer) {
  SqliteStore store(path);
  BlockDeviceMapping m{.id = "m1", .project = "p", .server_id = "s1", .volume_id = "v1", .device = "/dev/sdb"};
  store.insert_mapping(m);
  auto refused = [&](BlockDeviceMapping other) {
    try {
      store.insert_mapping(other);
    } catch (const ApiError& e) {
      return e.kind == ApiError::Kind::conflict;
    }
    return false;
  };
  EXPECT_TRUE(refused({.id = "m2", .server_id = "s1", .volume_id = "v2", .device = "/dev/sdb"}));
  EXPECT_TRUE(refused({.id = "m3", .server_id = "s1", .volume_id = "v1", .device = "/dev/sdc"}));
  // Another server may use the same name (and, multiattach, the same volume).
  store.insert_mapping({.id = "m4", .server_id = "s2", .volume_id = "v1", .device = "/dev/sdb"});
  EXPECT_EQ(store.mappings_of_server("s1").size(), 1u);
  EXPECT_EQ(store.all_mappings().size(), 2u);

  auto updated = store.update_mapping("m1", [](BlockDeviceMapping& x) {
    x.status = MappingStatus::attached;
    x.attachment_id = "a1";
    x.connection_info = R"({"driver_volume_type":"nbd"})";
  });
  EXPECT_EQ(updated.status, MappingStatus::attached);
  auto found = store.find_mapping("s1", "v1");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->attachment_id, "a1");
  EXPECT_EQ(found->device, "/dev/sdb");
  EXPECT_EQ(found->connection_info, R"({"driver_volume_type":"nbd"})");
  store.delete_mapping("m1");
  EXPECT_FALSE(store.find_mapping("s1", "v1"));
  EXPECT_THROW(store.update_mapping("m1", [](BlockDeviceMapping&) {}), ApiError);
  // The name is free again.
  store.insert_mapping({.id = "m5", .server_id = "s1", .volume_id = "v3", .device = "/dev/sdb"});
}

TEST_F(SqliteStoreTest, AServersActionLogKeepsItsEventsAndListsNewestFirst) {
  {
    SqliteStore store(path);
    store.insert_action({.request_id = "req-1", .server_id = "s1", .project = "p", .action = "attach_volume",
                         .start_time = "2026-12-04T10:00:00.000000",
                         .events = {{.event = "compute_attach_volume", .start_time = "2026-12-04T10:00:00.000000"}}});
    store.insert_action({.request_id = "req-2", .server_id = "s1", .project = "p", .action = "detach_volume",
                         .start_time = "2026-12-04T11:00:00.000000"});
    store.insert_action({.request_id = "req-3", .server_id = "s2", .project = "p", .action = "attach_volume"});
    // Recorded again (a resumed flow): the entry stays as it was.
    store.insert_action({.request_id = "req-1", .server_id = "s1", .project = "p", .action = "other"});
    store.update_action("req-1", [](InstanceAction& a) {
      a.message = "Error";
      a.events[0].result = "Error";
      a.events[0].details = "libvirt said \"no\"\n";
    });
    EXPECT_THROW(store.update_action("req-9", [](InstanceAction&) {}), ApiError);
  }
  SqliteStore store(path);  // and it is all there after a restart
  const auto log = store.actions_of_server("s1");
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].request_id, "req-2");
  EXPECT_EQ(log[1].action, "attach_volume");
  EXPECT_EQ(log[1].message, "Error");
  ASSERT_EQ(log[1].events.size(), 1u);
  EXPECT_EQ(log[1].events[0].details, "libvirt said \"no\"\n");
  EXPECT_FALSE(log[1].updated_at.empty());
  auto found = store.find_action("req-3");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->server_id, "s2");
  EXPECT_FALSE(found->start_time.empty());
  EXPECT_FALSE(store.find_action("req-9"));
}

}  // namespace
}  // namespace volgate::controller
