// volgate doctor's checks of the controller's config: directories, socket group, Ceph files,
// iSCSI portals.
#include "controller/doctor/storage_checks.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace volgate::controller::doctor {
namespace {

class StorageChecksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("doctor-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
};

TEST_F(StorageChecksTest, CephFiles) {
  std::ofstream(dir / "ceph.conf") << "[global]\n";
  std::ofstream(dir / "keyring") << "[client.admin]\n";
  PoolConfig pool{.name = "c", .driver = "rbd", .rbd_pool = "v", .ceph_conf = (dir / "ceph.conf").string(),
                  .ceph_keyring = (dir / "keyring").string()};
  auto findings = check_ceph({pool});
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].severity, Severity::ok) << findings[0].what;
  EXPECT_EQ(findings[0].check, "ceph pool 'c'");
  pool.ceph_conf = (dir / "missing.conf").string();
  findings = check_ceph({pool});
  EXPECT_EQ(findings[0].severity, Severity::failure);
  EXPECT_EQ(findings[0].what, "cannot read ceph_conf " + pool.ceph_conf + ": No such file or directory");
  pool.ceph_conf = dir.string();  // a directory is no config
  EXPECT_EQ(check_ceph({pool})[0].what, "cannot read ceph_conf " + dir.string() + ": Is a directory");
  pool.ceph_conf = (dir / "ceph.conf").string();
  pool.ceph_keyring = (dir / "nokeyring").string();
  findings = check_ceph({pool});
  EXPECT_EQ(findings[0].severity, Severity::failure);
  EXPECT_NE(findings[0].fix.find("ceph auth get client.admin"), std::string::npos);
  findings = check_ceph({PoolConfig{.name = "f", .driver = "file"}});
  EXPECT_EQ(findings[0].severity, Severity::skipped);
}

TEST_F(StorageChecksTest, PortalsTakeConnectionsOrSayWhyNot) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t size = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size);
  const std::string portal = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  EXPECT_EQ(tcp_connect_problem(portal, std::chrono::seconds(2)), "");
  ::close(listener);
  EXPECT_EQ(tcp_connect_problem(portal, std::chrono::seconds(2)), "Connection refused");
  EXPECT_EQ(tcp_connect_problem("[::1]:" + std::to_string(ntohs(address.sin_port)), std::chrono::seconds(2)).empty(),
            false);
  EXPECT_NE(tcp_connect_problem("no-such-host.invalid:3260", std::chrono::seconds(2)), "");
  // A pool whose portal refuses: one finding for tgtd, one per portal.
  PoolConfig pool{.name = "san", .driver = "iscsi", .directory = dir.string(), .portals = {portal},
                  .tgt_ipc_socket = (dir / "no-tgtd").string()};
  auto findings = check_iscsi({pool}, std::chrono::seconds(2));
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].severity, Severity::failure);
  EXPECT_NE(findings[0].what.find("tgtd does not answer tgtadm on " + pool.tgt_ipc_socket), std::string::npos)
      << findings[0].what;
  EXPECT_EQ(findings[1].check, "iscsi portal " + portal);
  EXPECT_EQ(findings[1].what, "pool 'san': cannot connect: Connection refused");
}

TEST_F(StorageChecksTest, StateDirectoryAndSocketGroup) {
  ControllerConfig config = default_config((dir / "state").string());
  config.gateway.socket_group = "no-such-group-here";
  auto findings = check_directories(config, true);
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].severity, Severity::ok);
  EXPECT_EQ(findings[0].what, (dir / "state").string() + " can be created");
  EXPECT_EQ(findings[1].severity, Severity::failure);
  EXPECT_EQ(findings[1].what, "gateway.socket_group no-such-group-here does not exist");
  EXPECT_EQ(check_directories(config, false)[1].severity, Severity::warning);  // no hypervisor to serve
  config.gateway.socket_group = "";
  EXPECT_NE(check_directories(config, true)[1].fix.find("libvirt-daemon-system"), std::string::npos);
  config.gateway.control_socket.clear();
  EXPECT_EQ(check_directories(config, true)[1].severity, Severity::skipped);

  // A directory above the socket that the group cannot pass.
  config = default_config((dir / "closed" / "state").string());
  std::filesystem::create_directories(dir / "closed");
  ::chmod((dir / "closed").c_str(), 0700);
  if (config.gateway.socket_group.empty()) GTEST_SKIP() << "no libvirt-qemu group to give here";
  ::chmod(dir.c_str(), 0711);
  findings = check_directories(config, true);
  EXPECT_EQ(findings[1].severity, Severity::failure);
  EXPECT_NE(findings[1].what.find((dir / "closed").string() + " is mode 0700"), std::string::npos) << findings[1].what;
  ::chmod((dir / "closed").c_str(), 0711);
  findings = check_directories(config, true);
  EXPECT_EQ(findings[1].severity, Severity::ok) << findings[1].what;
}

}  // namespace
}  // namespace volgate::controller::doctor
