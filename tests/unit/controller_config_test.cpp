// The controller's config file: defaults, relative paths, and refusal of anything unknown.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "controller/controller_config.hpp"

namespace volgate::controller {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("config-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write(const std::string& text) {
    std::string path = dir / "c.json";
    std::ofstream(path) << text;
    return path;
  }
  std::string error_of(const std::string& text) {
    try {
      load_config(write(text), "");
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  std::filesystem::path dir;
};

TEST_F(ConfigTest, TheEmbeddedDefaultKeepsEverythingInTheStateDirectory) {
  ControllerConfig c = default_config("/srv/v");
  EXPECT_EQ(c.database, "/srv/v/controller.db");
  EXPECT_EQ(c.unix_socket, "/srv/v/controller.sock");
  EXPECT_EQ(c.token_file, "/srv/v/token");
  EXPECT_EQ(c.master_key_file, "/srv/v/master.key");
  ASSERT_EQ(c.pools.size(), 1u);
  EXPECT_EQ(c.pools[0].directory, "/srv/v/pool");
  EXPECT_EQ(c.pools[0].availability_zone, "nova");
  EXPECT_TRUE(c.volume_types.count("default"));
  EXPECT_TRUE(c.volume_types.at("encrypted").encrypted);
  EXPECT_EQ(c.default_quotas.at(kQuotaGigabytes), 1000);
}

TEST_F(ConfigTest, AFileSetsPoolsTypesQuotasAndResolvesRelativePaths) {
  ControllerConfig c = load_config(write(R"({
    "state_dir": "/var/lib/vg", "tcp_listen": "127.0.0.1:8776", "database": "db/c.db",
    "quotas": {"gigabytes": 50, "volumes": -1},
    "scheduler": {"weighers": ["capacity", "chance"], "chance_weight_multiplier": 0.5},
    "volume_types": {"gold": {"extra_specs": {"speed": "fast"}}},
    "pools": [{"name": "a", "driver": "file", "directory": "pa", "max_over_subscription_ratio": 4,
               "capabilities": {"speed": "fast"}},
              {"name": "b", "driver": "iscsi", "directory": "/luns", "portals": ["127.0.0.1:3260"]},
              {"name": "c", "driver": "rbd", "rbd_pool": "vols", "ceph_conf": "/etc/ceph/ceph.conf",
               "ceph_client": "cinder", "ceph_keyring": "cinder.keyring"}]
  })"), "");
  EXPECT_EQ(c.database, "/var/lib/vg/db/c.db");
  EXPECT_EQ(c.unix_socket, "/var/lib/vg/controller.sock");
  EXPECT_EQ(c.tcp_listen, "127.0.0.1:8776");
  EXPECT_EQ(c.default_quotas.at(kQuotaGigabytes), 50);
  EXPECT_EQ(c.default_quotas.at(kQuotaVolumes), -1);
  EXPECT_EQ(c.default_quotas.at(kQuotaSnapshots), 10);
  EXPECT_EQ(c.scheduler.weighers.size(), 2u);
  EXPECT_EQ(c.volume_types.at("gold").extra_specs.at("speed"), "fast");
  ASSERT_EQ(c.pools.size(), 3u);
  EXPECT_EQ(c.pools[0].directory, "/var/lib/vg/pa");
  EXPECT_EQ(c.pools[0].max_over_subscription_ratio, 4);
  EXPECT_EQ(c.pools[1].portals.at(0), "127.0.0.1:3260");
  EXPECT_EQ(c.pools[2].ceph_client, "cinder");
  EXPECT_EQ(c.pools[2].ceph_keyring, "/var/lib/vg/cinder.keyring");
  // --state-dir overrides the file's.
  EXPECT_EQ(load_config(dir / "c.json", "/elsewhere").database, "/elsewhere/db/c.db");
}

TEST_F(ConfigTest, MistakesAreRefusedByName) {
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pool": []})").find("unknown key 'pool'"), std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "a", "driver": "file", "dir": "/p"}]})")
                .find("unknown key 'dir'"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "a", "driver": "nfs", "directory": "/p"}]})")
                .find("unknown driver"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "a", "driver": "iscsi", "directory": "/p"}]})")
                .find("needs portals"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "a", "driver": "file", "directory": "/p"},
                                                      {"name": "a", "driver": "file", "directory": "/q"}]})")
                .find("configured twice"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "c", "driver": "rbd", "rbd_pool": "v"}]})")
                .find("rbd_pool and ceph_conf"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "workers": "four"})").find("workers"), std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "quotas": {"gigabytes": -5}})").find("quotas.gigabytes"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "scheduler": {"weighers": ["goodness"]}})").find("goodness"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "default_volume_type": "gold"})").find("gold"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"database": "x.db"})").find("state_dir"), std::string::npos);
  EXPECT_THROW(load_config(dir / "missing.json", ""), std::runtime_error);
}

}  // namespace
}  // namespace volgate::controller
