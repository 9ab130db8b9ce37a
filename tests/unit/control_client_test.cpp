// GatewayControlClient against the real control API of an in-process nbd::Server: what the
// controller will see for each outcome, and a gateway that never answers.
#include "gateway/control_client.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "gateway/control_api.hpp"

namespace volgate::gateway {
namespace {

ExportSpec memory_target(uint64_t size) {
  ExportSpec spec;
  spec.backend = ExportSpec::Backend::memory;
  spec.memory_size = size;
  return spec;
}

class ControlClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/volgate-control-test.XXXXXX";
    dir_ = ::mkdtemp(pattern);
    server_.emplace(nbd::ExportTable(), 1, std::chrono::microseconds(0));
    server_->listen_unix(dir_ + "/nbd.sock");
    api_.emplace(*server_, dir_ + "/control.sock", std::vector<ExportSpec>{});
    api_->start();
    thread_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    server_->stop();
    thread_.join();
    api_->shutdown();
    api_.reset();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  std::optional<nbd::Server> server_;
  std::optional<ControlApi> api_;
  std::thread thread_;
};

TEST_F(ControlClientTest, EveryCallAndItsOutcomes) {
  GatewayControlClient client(dir_ + "/control.sock");
  auto health = client.health();
  EXPECT_EQ(health.status, "ok");
  EXPECT_EQ(health.exports, 0u);
  EXPECT_EQ(health.pid, ::getpid());

  auto created = client.put_export("vol1", memory_target(1 << 20), false);
  EXPECT_TRUE(created.created);
  EXPECT_EQ(created.info.name, "vol1");
  EXPECT_EQ(created.info.size, 1u << 20);
  EXPECT_FALSE(created.info.encrypted);
  auto again = client.put_export("vol1", memory_target(1 << 20), false);
  EXPECT_FALSE(again.created);

  try {
    client.put_export("vol1", memory_target(2 << 20), false);
    ADD_FAILURE() << "another target under the same name was accepted";
  } catch (const GatewayControlError& e) {
    EXPECT_EQ(e.status, 409);
    EXPECT_NE(std::string(e.what()).find("already served"), std::string::npos) << e.what();
  }
  ExportSpec missing;
  missing.backend = ExportSpec::Backend::file;
  missing.path = dir_ + "/missing.img";
  try {
    client.put_export("vol2", missing, false);
    ADD_FAILURE() << "a missing file was served";
  } catch (const GatewayControlError& e) {
    EXPECT_EQ(e.status, 400);
  }
  // A volume key for a target that holds no LUKS container.
  control::LuksKey key;
  key.bytes = crypto::SecureBytes(64);
  try {
    client.put_export("vol3", memory_target(32 << 20), false, &key);
    ADD_FAILURE() << "a key was accepted for a device without LUKS";
  } catch (const GatewayControlError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(std::string(e.what()).find("no LUKS header"), std::string::npos) << e.what();
  }

  auto list = client.list_exports();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "vol1");
  EXPECT_EQ(list[0].connections, 0u);
  auto one = client.get_export("vol1");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->target.memory_size, 1u << 20);
  EXPECT_FALSE(client.get_export("nothing"));
  EXPECT_THROW(client.get_export("bad/name"), std::invalid_argument);

  EXPECT_TRUE(client.delete_export("vol1", false));
  EXPECT_FALSE(client.delete_export("vol1", false));
  EXPECT_FALSE(client.get_export("vol1"));
  EXPECT_EQ(client.health().exports, 0u);
}

TEST(ControlClient, NoGatewayAndASilentOneAreErrorsWithStatusZero) {
  GatewayControlClient nobody("/nonexistent/control.sock");
  try {
    nobody.health();
    ADD_FAILURE();
  } catch (const GatewayControlError& e) {
    EXPECT_EQ(e.status, 0);
  }

  // A socket that accepts (the kernel's backlog does) and never answers.
  std::string path = "/tmp/volgate-silent-" + std::to_string(::getpid()) + ".sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  ::unlink(path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  GatewayControlClient::Timeouts quick;
  quick.call = std::chrono::milliseconds(200);
  GatewayControlClient silent(path, quick);
  const auto start = std::chrono::steady_clock::now();
  try {
    silent.list_exports();
    ADD_FAILURE();
  } catch (const GatewayControlError& e) {
    EXPECT_EQ(e.status, 0);
    EXPECT_NE(std::string(e.what()).find("no answer"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ::close(fd);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace volgate::gateway
