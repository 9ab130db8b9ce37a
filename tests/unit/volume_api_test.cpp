// The REST mapping without sockets: Cinder-shaped bodies in and out, fault bodies for errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "controller/api/api_error.hpp"
#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/api/volume_api.hpp"

namespace volgate::controller {
namespace {

using nlohmann::json;

class VolumeApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("api-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    ControllerConfig config = default_config(dir);
    store = std::make_unique<SqliteStore>(":memory:");
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(config.pools[0]));
    service = std::make_unique<VolumeService>(config, *store, std::move(pools), std::nullopt,
                                              ServiceOptions{.run_inline = true});
    api = std::make_unique<VolumeApi>(*service);
  }
  void TearDown() override {
    api.reset();
    service.reset();
    std::filesystem::remove_all(dir);
  }

  std::pair<int, json> call(const std::string& method, const std::string& target, const std::string& body = "") {
    ApiResponse r = api->handle(method, target, body);
    return {r.status, r.body.empty() ? json() : json::parse(r.body)};
  }
  // The fault's message, checking its shape: {"FAULT": {"message": ..., "code": STATUS}}.
  std::string fault(const std::pair<int, json>& r, const std::string& name) {
    EXPECT_TRUE(r.second.contains(name)) << r.second.dump();
    if (!r.second.contains(name)) return "";
    EXPECT_EQ(r.second[name]["code"], r.first);
    return r.second[name]["message"];
  }

  std::filesystem::path dir;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> service;
  std::unique_ptr<VolumeApi> api;
};

TEST_F(VolumeApiTest, VolumeLifecycleInCinderShapes) {
  auto created = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1, "name": "a", "description": "d"}})");
  ASSERT_EQ(created.first, 202) << created.second.dump();
  const json& v = created.second["volume"];
  EXPECT_EQ(v["size"], 1);
  EXPECT_EQ(v["name"], "a");
  EXPECT_EQ(v["status"], "available");  // inline: already done
  EXPECT_EQ(v["snapshot_id"], nullptr);
  EXPECT_EQ(v["encrypted"], false);
  EXPECT_EQ(v["os-vol-host-attr:host"], "volgate@default#default");
  const std::string id = v["id"];

  auto listed = call("GET", "/v3/p/volumes/detail");
  ASSERT_EQ(listed.first, 200);
  EXPECT_EQ(listed.second["volumes"].size(), 1u);
  EXPECT_EQ(call("GET", "/v3/other/volumes").second["volumes"].size(), 0u);
  EXPECT_EQ(call("POST", "/v3/p/volumes/" + id + "/action", R"({"os-extend": {"new_size": "2"}})").first, 202);
  EXPECT_EQ(call("GET", "/v3/p/volumes/" + id).second["volume"]["size"], 2);
  auto quota = call("GET", "/v3/p/os-quota-sets/p?usage=true");
  EXPECT_EQ(quota.second["quota_set"]["gigabytes"]["in_use"], 2);
  EXPECT_EQ(call("GET", "/v3/p/os-quota-sets/p").second["quota_set"]["volumes"], 10);
  EXPECT_EQ(call("DELETE", "/v3/p/volumes/" + id).first, 202);
  EXPECT_EQ(call("GET", "/v3/p/volumes/" + id).first, 404);
}

TEST_F(VolumeApiTest, BadInputGetsFaultBodies) {
  auto r = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1, "colour": "red"}})");
  EXPECT_EQ(r.first, 400);
  EXPECT_NE(fault(r, "badRequest").find("colour"), std::string::npos);
  for (const char* body : {R"({"volume": {"size": 0}})", R"({"volume": {"size": "1x"}})", R"({"volume": {"size": 2.5}})",
                           R"({"volume": {"size": 1048577}})", R"({"volume": {"size": 1, "name": 5}})",
                           R"({"volume": {}})", "not json", R"({"volumes": {"size": 1}})",
                           R"({"volume": {"size": 1, "encrypted": "yes"}})",
                           R"({"volume": {"size": 1, "metadata": {"k": "v"}}})"}) {
    auto bad = call("POST", "/v3/p/volumes", body);
    EXPECT_EQ(bad.first, 400) << body;
    EXPECT_FALSE(fault(bad, "badRequest").empty()) << body;
  }
  EXPECT_EQ(call("POST", "/v3/p/volumes", R"({"volume": {"size": 1, "encrypted": true}})").first, 400)
      << "no master key: encryption must be refused";
  auto missing = call("GET", "/v3/p/volumes/nope");
  EXPECT_EQ(missing.first, 404);
  EXPECT_EQ(fault(missing, "itemNotFound"), "Volume nope could not be found.");
  EXPECT_EQ(call("GET", "/v3/bad%20project/volumes").first, 400);
  EXPECT_EQ(call("PATCH", "/v3/p/volumes").first, 405);
  EXPECT_EQ(call("GET", "/v2/p/volumes").first, 404);
  EXPECT_EQ(call("PUT", "/v3/p/os-quota-sets/p", R"({"quota_set": {"volumes": "many"}})").first, 400);
  EXPECT_EQ(call("PUT", "/v3/p/os-quota-sets/p", R"({"quota_set": {"backups": 1}})").first, 400);
  store->insert_volume({.id = "busy", .project = "p", .size_gb = 1, .status = VolumeStatus::extending});
  auto conflict = call("DELETE", "/v3/p/volumes/busy");
  EXPECT_EQ(conflict.first, 409);
  EXPECT_NE(fault(conflict, "conflictingRequest").find("extending"), std::string::npos);
}

// Paths and methods are echoed in fault messages; bytes that are not UTF-8 once made the JSON
// writer throw out of handle(), which ended the controller (found by tests/fuzz/volume_api_fuzz).
TEST_F(VolumeApiTest, BytesThatAreNotUtf8GetFaultBodiesToo) {
  auto project = call("GET", "/v3/p\xff/volumes");
  EXPECT_EQ(project.first, 400);
  EXPECT_NE(fault(project, "badRequest").find("p\xEF\xBF\xBD"), std::string::npos)  // U+FFFD
      << project.second.dump();
  auto volume = call("GET", "/v3/p/volumes/\xc3");
  EXPECT_EQ(volume.first, 404);
  EXPECT_FALSE(fault(volume, "itemNotFound").empty());
  auto method = call("POS\xde", "/v3/p/volumes");
  EXPECT_EQ(method.first, 405);
  EXPECT_FALSE(fault(method, "HTTPMethodNotAllowed").empty()) << method.second.dump();
  EXPECT_EQ(call("GET", "/v3/p/bogus\xc3").first, 404);
  // Ids from the path also reach a flow's journal, which is JSON too.
  EXPECT_EQ(call("DELETE", "/v3/p/volumes/\xff").first, 404);
  EXPECT_EQ(call("POST", "/v3/p/volumes/\xff/action", R"({"os-extend": {"new_size": 2}})").first, 404);
  EXPECT_EQ(call("DELETE", "/v3/p/snapshots/\xff").first, 404);
}

TEST_F(VolumeApiTest, QuotaExceededIs413OverLimit) {
  EXPECT_EQ(call("PUT", "/v3/p/os-quota-sets/p", R"({"quota_set": {"volumes": 1}})").first, 200);
  EXPECT_EQ(call("POST", "/v3/p/volumes", R"({"volume": {"size": 1}})").first, 202);
  auto r = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1}})");
  EXPECT_EQ(r.first, 413);
  EXPECT_NE(fault(r, "overLimit").find("volumes"), std::string::npos);
}

TEST_F(VolumeApiTest, SnapshotsPoolsAndTypes) {
  std::string id = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1}})").second["volume"]["id"];
  auto s = call("POST", "/v3/p/snapshots", R"({"snapshot": {"volume_id": ")" + id + R"(", "name": "s"}})");
  ASSERT_EQ(s.first, 202) << s.second.dump();
  EXPECT_EQ(s.second["snapshot"]["status"], "available");
  EXPECT_EQ(call("GET", "/v3/p/snapshots").second["snapshots"].size(), 1u);
  EXPECT_EQ(call("POST", "/v3/p/snapshots", R"({"snapshot": {"name": "no volume"}})").first, 400);
  auto pools = call("GET", "/v3/p/scheduler-stats/get_pools?detail=true");
  ASSERT_EQ(pools.second["pools"].size(), 1u);
  const json& caps = pools.second["pools"][0]["capabilities"];
  EXPECT_EQ(caps["pool_name"], "default");
  EXPECT_GT(caps["total_capacity_gb"].get<double>(), 0);
  EXPECT_EQ(caps["allocated_capacity_gb"], 1.0);
  EXPECT_EQ(caps["thin_provisioning_support"], "true");
  EXPECT_FALSE(call("GET", "/v3/p/scheduler-stats/get_pools").second["pools"][0].contains("capabilities"));
  EXPECT_EQ(call("GET", "/v3/p/types").second["volume_types"].size(), 2u);
  EXPECT_EQ(call("GET", "/v3/p/types/encrypted").second["volume_type"]["volgate:encrypted"], true);
  EXPECT_EQ(call("GET", "/v3/p/types/gold").first, 404);
}

}  // namespace
// A body nested hundreds of thousands of levels deep once overflowed the stack (nlohmann
// copies and dumps recursively). Every route that reads a body refuses it with 400.
TEST_F(VolumeApiTest, DeeplyNestedBodiesAreRefusedOnEveryRoute) {
  const size_t depth = 300000;  // about 600 KB, under the 1 MiB body limit
  const std::string deep_array = std::string(depth, '[') + std::string(depth, ']');
  std::string deep_object;
  for (size_t i = 0; i < depth / 8; ++i) deep_object += "{\"a\":";
  deep_object += "1" + std::string(depth / 8, '}');
  auto created = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1}})");
  ASSERT_EQ(created.first, 202);
  const std::string id = created.second["volume"]["id"];
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"POST", "/v3/p/volumes"}, {"POST", "/v3/p/volumes/" + id + "/action"}, {"POST", "/v3/p/snapshots"},
      {"PUT", "/v3/p/os-quota-sets/p"}};
  for (const auto& [method, path] : routes)
    for (const std::string& deep : {deep_array, deep_object})
      for (const std::string& body : {deep, R"({"volume": {"name": )" + deep + "}}",
                                       R"({"os-extend": {"new_size": )" + deep + "}}",
                                       R"({"snapshot": {"volume_id": ")" + id + R"(", "metadata": )" + deep + "}}",
                                       R"({"quota_set": {"volumes": )" + deep + "}}"}) {
        auto r = call(method, path, body);
        EXPECT_EQ(r.first, 400) << method << " " << path;
        EXPECT_NE(fault(r, "badRequest").find("nested deeper than"), std::string::npos);
      }
  // Nesting a real client could send still passes the parser (and is judged by the route).
  std::string nested = R"({"volume": {"size": 1, "metadata": )";
  for (int i = 0; i < 20; ++i) nested += "[";
  nested += std::string(20, ']') + "}}";
  EXPECT_EQ(fault(call("POST", "/v3/p/volumes", nested), "badRequest").find("nested"), std::string::npos);
}

// Internal paths stay in the log: answers name no file of the host.
TEST_F(VolumeApiTest, FailuresShowNoHostPaths) {
  EXPECT_EQ(without_paths("create /srv/pool/volume-1.img: No space left on device"),
            "create <path>: No space left on device");
  EXPECT_EQ(without_paths("open '/etc/ceph/ceph.conf' failed; read/write I/O 1/2"),
            "open '<path>' failed; read/write I/O 1/2");
  EXPECT_EQ(without_paths("/a/b."), "<path>.");
  EXPECT_EQ(without_paths("size 10 / 2"), "size 10 / 2");
  auto created = call("POST", "/v3/p/volumes", R"({"volume": {"size": 1}})");
  const std::string id = created.second["volume"]["id"];
  store->update_volume(id, [](Volume& v) {
    v.status = VolumeStatus::error;
    v.error_message = "size " + std::string("/var/lib/volgate/pool/volume-x.img") + ": Input/output error";
  });
  auto shown = call("GET", "/v3/p/volumes/" + id);
  EXPECT_EQ(shown.second["volume"]["volgate:error"], "size <path>: Input/output error");
}

}  // namespace volgate::controller
