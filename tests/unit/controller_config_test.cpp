// The controller's config file: defaults, relative paths, and refusal of anything unknown.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "controller/controller_config.hpp"
#include "controller/pools/iscsi_name.hpp"

namespace volgate::controller {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("config-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write(const std::string& text, const std::string& name = "c.json") {
    std::string path = dir / name;
    std::ofstream(path) << text;
    return path;
  }
  // A config with one iscsi pool whose other keys are `keys` (JSON members, may be empty).
  std::string iscsi_pool(const std::string& keys) {
    return R"({"state_dir": ")" + dir.string() +
           R"(", "pools": [{"name": "san", "driver": "iscsi", "directory": "luns", "portals": ["127.0.0.1:3260"])" +
           (keys.empty() ? "" : ", " + keys) + "}]}";
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

// Uploads go into an image directory (so that each is an imageRef at once), by default the first.
TEST_F(ConfigTest, TheImageUploadDirectoryIsOneOfTheImageDirectories) {
  ControllerConfig c = default_config("/srv/v");
  EXPECT_EQ(c.image_upload_dir, "/srv/v/images");
  EXPECT_EQ(c.image_convert_timeout, std::chrono::seconds(3600));
  c = load_config(write(R"({"state_dir": "/srv/v", "image_dirs": ["a", "/srv/b"], "image_upload_dir": "/srv/b",
                           "image_convert_timeout": 30})"),
                  "");
  EXPECT_EQ(c.image_upload_dir, "/srv/b");
  EXPECT_EQ(c.image_convert_timeout, std::chrono::seconds(30));
  c = load_config(write(R"({"state_dir": "/srv/v", "image_dirs": ["a", "/srv/b"]})"), "");
  EXPECT_EQ(c.image_upload_dir, "/srv/v/a");
  EXPECT_NE(error_of(R"({"state_dir": "/srv/v", "image_dirs": ["a"], "image_upload_dir": "/srv/elsewhere"})")
                .find("image_upload_dir /srv/elsewhere must be one of image_dirs"),
            std::string::npos);
  for (const char* bad : {"0", "-1", "\"60\"", "86401", "1.5"})
    EXPECT_NE(error_of(std::string(R"({"state_dir": "/srv/v", "image_convert_timeout": )") + bad + "}")
                  .find("image_convert_timeout"),
              std::string::npos)
        << bad;
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

TEST_F(ConfigTest, TlsCertificatesAndTheHandshakeTimeoutAreRead) {
  ControllerConfig c = load_config(write(R"({"state_dir": "/var/lib/vg", "tcp_listen": "0.0.0.0:8776",
    "tls_certificates": "api-tls", "api_limits": {"handshake_timeout": 2.5}})"), "");
  EXPECT_EQ(c.tls_certificates, "/var/lib/vg/api-tls");  // relative to the state directory
  EXPECT_EQ(c.api_limits.handshake, std::chrono::milliseconds(2500));
  EXPECT_EQ(load_config(write(R"({"state_dir": "/var/lib/vg"})"), "").api_limits.handshake, std::chrono::seconds(10));
  EXPECT_NE(error_of(R"({"state_dir": "/x", "api_limits": {"handshake_timeout": 0}})")
                .find("api_limits.handshake_timeout"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "tls_certificates": 5})").find("tls_certificates"), std::string::npos);
}

TEST_F(ConfigTest, TheMetricsAddressIsReadAndChecked) {
  EXPECT_EQ(load_config(write(R"({"state_dir": "/x", "metrics": "127.0.0.1:9187"})"), "").metrics, "127.0.0.1:9187");
  EXPECT_EQ(load_config(write(R"({"state_dir": "/x", "metrics": "9187"})"), "").metrics, "9187");
  EXPECT_TRUE(load_config(write(R"({"state_dir": "/x"})"), "").metrics.empty());
  const std::string error = error_of(R"({"state_dir": "/x", "metrics": "localhost:port"})");
  EXPECT_NE(error.find("metrics"), std::string::npos) << error;
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

TEST_F(ConfigTest, ABackupRepositoryIsADirectoryOrACephPool) {
  const std::string state = R"({"state_dir": ")" + dir.string() + R"(", )";
  auto c = load_config(write(state + R"("backups": {"kind": "rados", "rados_pool": "bk", "ceph_conf": "ceph.conf",
                                                      "ceph_client": "backup", "ceph_keyring": "k"}})"), "");
  EXPECT_EQ(c.backups.kind, "rados");
  EXPECT_EQ(c.backups.rados_pool, "bk");
  EXPECT_EQ(c.backups.ceph_conf, (dir / "ceph.conf").string()) << "relative to the config";
  EXPECT_EQ(c.backups.ceph_client, "backup");
  EXPECT_EQ(c.backups.ceph_keyring, (dir / "k").string());
  EXPECT_TRUE(c.backups.directory.empty()) << "no directory for a rados repository";
  EXPECT_TRUE(c.backups.owner.ends_with(":" + dir.string())) << "the lock's owner names the state directory";
  EXPECT_EQ(load_config(write(state + R"("backups": {}})"), "").backups.directory, (dir / "backups").string());
  EXPECT_NE(error_of(state + R"("backups": {"kind": "rados"}})").find("rados_pool"), std::string::npos);
  EXPECT_NE(error_of(state + R"("backups": {"kind": "s3"}})").find("directory or rados"), std::string::npos);
}

TEST_F(ConfigTest, TheLibvirtBlockSetsHowLongADetachWaits) {
  ControllerConfig d = default_config(dir);
  EXPECT_EQ(d.libvirt_detach.attempts, 8u);  // Nova's device_detach_attempts
  EXPECT_EQ(d.libvirt_detach.wait_per_attempt, std::chrono::seconds(5));
  ControllerConfig c = load_config(
      write(R"({"state_dir": "/x", "libvirt": {"device_detach_attempts": 2, "device_detach_timeout": 0.25}})"), "");
  EXPECT_EQ(c.libvirt_detach.attempts, 2u);
  EXPECT_EQ(c.libvirt_detach.wait_per_attempt, std::chrono::milliseconds(250));
  EXPECT_NE(error_of(R"({"state_dir": "/x", "libvirt": {"device_detach_attempts": 0}})")
                .find("libvirt.device_detach_attempts"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "libvirt": {"device_detach_timeout": "5s"}})")
                .find("libvirt.device_detach_timeout"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "libvirt": {"detach_timeout": 1}})").find("unknown key 'detach_timeout'"),
            std::string::npos);
}

TEST_F(ConfigTest, TheLibvirtBlockSetsTheNbdReconnectDelay) {
  EXPECT_EQ(default_config(dir).nbd_reconnect_delay, std::chrono::seconds(10));
  EXPECT_EQ(load_config(write(R"({"state_dir": "/x", "libvirt": {"nbd_reconnect_delay": 3}})"), "").nbd_reconnect_delay,
            std::chrono::seconds(3));
  EXPECT_EQ(load_config(write(R"({"state_dir": "/x", "libvirt": {"nbd_reconnect_delay": 0}})"), "").nbd_reconnect_delay,
            std::chrono::seconds(0));
  for (const char* bad : {"-1", "2.5", "\"10s\"", "3601"})
    EXPECT_NE(error_of(std::string(R"({"state_dir": "/x", "libvirt": {"nbd_reconnect_delay": )") + bad + "}}")
                  .find("libvirt.nbd_reconnect_delay"),
              std::string::npos)
        << bad;
}

TEST_F(ConfigTest, AnIscsiPoolAdmitsThisHostsInitiatorNameByDefault) {
  ControllerConfig c = load_config(write(iscsi_pool("")), "");
  ASSERT_EQ(c.pools.size(), 1u);
  EXPECT_EQ(c.pools[0].initiator_name, default_initiator_name());
  EXPECT_TRUE(c.pools[0].initiator_name.starts_with("iqn.2026-11.org.volgate:host-")) << c.pools[0].initiator_name;
  EXPECT_EQ(iscsi_name_problem(c.pools[0].initiator_name), "");
  EXPECT_TRUE(c.pools[0].chap_user.empty());
  // Other drivers have no initiator name.
  EXPECT_EQ(default_config("/srv/v").pools[0].initiator_name, "");
}

TEST_F(ConfigTest, AnIscsiPoolTakesAnInitiatorNameAndACHAPUserWithASecretFile) {
  write("a-secret-of-16-b\n", "chap.secret");
  ControllerConfig c = load_config(
      write(iscsi_pool(R"("initiator_name": "iqn.2026-11.com.example:hv1", "chap_user": "gw-1",
                          "chap_secret_file": "chap.secret", "initiator_addresses": ["10.0.0.0/24"])")),
      "");
  EXPECT_EQ(c.pools[0].initiator_name, "iqn.2026-11.com.example:hv1");
  EXPECT_EQ(c.pools[0].chap_user, "gw-1");
  EXPECT_EQ(c.pools[0].chap_secret_file, (dir / "chap.secret").string());  // relative to state_dir
  EXPECT_EQ(c.pools[0].initiator_addresses, std::vector<std::string>{"10.0.0.0/24"});
  // The secret itself is nowhere in the config.
  EXPECT_EQ(c.pools[0].chap_secret_file.find("a-secret"), std::string::npos);
}

TEST_F(ConfigTest, BadInitiatorNamesAreRefusedSayingWhy) {
  auto name_error = [&](const std::string& name) {
    return error_of(iscsi_pool(R"("initiator_name": ")" + name + R"(")"));
  };
  for (const char* bad : {"gateway", "iqn.2026-11.org.volgate:Host", "iqn.2026-13.org.volgate:h",
                          "iqn.26-11.org.volgate:h", "iqn.2026-11.:h", "iqn.2026-11.org.volgate:", "eui.12345",
                          "iqn.2026-11.org.volgate:a b"}) {
    std::string e = name_error(bad);
    EXPECT_NE(e.find("initiator_name '" + std::string(bad) + "' is not an iSCSI name"), std::string::npos)
        << bad << ": " << e;
  }
  EXPECT_NE(name_error("iqn.2026-11.org.volgate:" + std::string(220, 'x')).find("longer than 223"), std::string::npos);
  EXPECT_EQ(name_error("eui.02004567A425678D"), "");
  EXPECT_EQ(name_error("iqn.2026-11.org.volgate"), "");
}

TEST_F(ConfigTest, CHAPMistakesAreRefusedWithoutShowingTheSecret) {
  write("short\n", "short.secret");
  write("\n\n", "blank.secret");
  write(std::string(256, 's'), "long.secret");
  write("a-secret-of-16-b", "good.secret");
  write("another-secret-16", "other.secret");
  auto chap_error = [&](const std::string& keys) { return error_of(iscsi_pool(keys)); };
  EXPECT_NE(chap_error(R"("chap_user": "gw")").find("chap_user needs chap_secret_file"), std::string::npos);
  EXPECT_NE(chap_error(R"("chap_secret_file": "good.secret")").find("chap_secret_file needs chap_user"),
            std::string::npos);
  std::string missing = chap_error(R"("chap_user": "gw", "chap_secret_file": "missing.secret")");
  EXPECT_NE(missing.find("chap_secret_file: key file " + (dir / "missing.secret").string() + ": No such file"),
            std::string::npos)
      << missing;
  EXPECT_NE(chap_error(R"("chap_user": "gw", "chap_secret_file": "blank.secret")").find("the CHAP secret is empty"),
            std::string::npos);
  std::string short_error = chap_error(R"("chap_user": "gw", "chap_secret_file": "short.secret")");
  EXPECT_NE(short_error.find("must be 12-255 bytes"), std::string::npos) << short_error;
  EXPECT_EQ(short_error.find("short\n"), std::string::npos);
  EXPECT_NE(chap_error(R"("chap_user": "gw", "chap_secret_file": "long.secret")").find("must be 12-255 bytes"),
            std::string::npos);
  EXPECT_NE(chap_error(R"("chap_user": "gw,x", "chap_secret_file": "good.secret")").find("chap_user 'gw,x' must be"),
            std::string::npos);
  EXPECT_NE(chap_error(R"("chap_user": "gw", "chap_secret_file": "a,b.secret")").find("','"), std::string::npos);
  EXPECT_NE(error_of(R"({"state_dir": "/x", "pools": [{"name": "f", "driver": "file", "directory": "/p",
                                                      "chap_user": "gw"}]})")
                .find("for iscsi pools"),
            std::string::npos);
  const std::string dir_text = dir.string();
  EXPECT_NE(error_of(R"({"state_dir": ")" + dir_text + R"(", "pools": [
      {"name": "a", "driver": "iscsi", "directory": "a", "portals": ["127.0.0.1:3260"], "chap_user": "gw",
       "chap_secret_file": "good.secret"},
      {"name": "b", "driver": "iscsi", "directory": "b", "portals": ["127.0.0.1:3260"], "chap_user": "gw",
       "chap_secret_file": "other.secret"}]})")
                .find("two different chap_secret_files"),
            std::string::npos);
}

TEST_F(ConfigTest, TokensCarryAProjectAndARole) {
  const std::string sha(64, 'a');
  auto c = load_config(write(R"({"state_dir": ")" + dir.string() + R"(", "tokens": [
      {"project": "alpha", "token_file": "alpha.token"},
      {"project": "ops", "role": "admin", "token_sha256": ")" + sha + R"("}]})"),
                       "");
  ASSERT_EQ(c.tokens.size(), 2u);
  EXPECT_EQ(c.tokens[0].project, "alpha");
  EXPECT_EQ(c.tokens[0].role, Role::member);  // the default
  EXPECT_EQ(c.tokens[0].token_file, dir.string() + "/alpha.token");  // relative to the state directory
  EXPECT_EQ(c.tokens[1].role, Role::admin);
  EXPECT_EQ(c.tokens[1].token_sha256, sha);
  EXPECT_TRUE(default_config("/srv/v").tokens.empty());
  auto with = [&](const std::string& tokens) {
    return error_of(R"({"state_dir": ")" + dir.string() + R"(", "tokens": )" + tokens + "}");
  };
  EXPECT_NE(with(R"({"project": "a"})").find("tokens: expected a list"), std::string::npos);
  EXPECT_NE(with(R"([{"project": "a", "token_file": "f", "token_sha256": ")" + sha + R"("}])")
                .find("tokens[0]: give the token as exactly one of token_file and token_sha256"),
            std::string::npos);
  EXPECT_NE(with(R"([{"project": "a", "role": "root", "token_file": "f"}])").find("tokens[0].role: must be admin or member"),
            std::string::npos);
  EXPECT_NE(with(R"([{"project": "", "token_file": "f"}])").find("tokens[0].project"), std::string::npos);
  EXPECT_NE(with(R"([{"project": "a", "token_sha256": "xyz"}])").find("tokens[0].token_sha256: must be 64 hex digits"),
            std::string::npos);
  EXPECT_NE(with(R"([{"project": "a", "token_file": "f", "secret": "x"}])").find("secret"), std::string::npos);
  // A token file inside an image directory would be readable through imageRef.
  EXPECT_NE(error_of(R"({"state_dir": ")" + dir.string() + R"(", "image_dirs": ["/srv/img"], "tokens": [
      {"project": "a", "token_file": "/srv/img/a.token"}]})")
                .find("contains /srv/img/a.token"),
            std::string::npos);
}

}  // namespace
}  // namespace volgate::controller
