// The REST mapping without sockets: Cinder-shaped bodies in and out, fault bodies for errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "controller/api/access_policy.hpp"
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

  std::pair<int, json> call(const std::string& method, const std::string& target, const std::string& body = "",
                            const RequestHeaders& headers = {}) {
    ApiResponse r = api->handle(method, target, body, headers);
    last_headers = r.headers;
    return {r.status, r.body.empty() ? json() : json::parse(r.body)};
  }
  // A call in microversion 3.`minor`.
  std::pair<int, json> call_at(int minor, const std::string& method, const std::string& target,
                               const std::string& body = "") {
    return call(method, target, body, {.api_version = "volume 3." + std::to_string(minor)});
  }
  std::string header(const std::string& name) {
    for (const auto& [key, value] : last_headers)
      if (key == name) return value;
    return "";
  }
  std::string create_volume(const std::string& body = R"({"volume": {"size": 1}})") {
    auto r = call("POST", "/v3/p/volumes", body);
    EXPECT_EQ(r.first, 202) << r.second.dump();
    return r.second["volume"].value("id", "");
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
  std::vector<std::pair<std::string, std::string>> last_headers;
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
                           R"({"volume": {"size": 1, "metadata": {"k": 1}}})"}) {
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
  EXPECT_EQ(call("PUT", "/v3/p/os-quota-sets/p", R"({"quota_set": {"replicas": 1}})").first, 400);
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

namespace volgate::controller {
namespace {

// ------------------------------------------------------------------ what cinderclient needs

TEST_F(VolumeApiTest, VersionsDocumentOffersTheMicroversionRange) {
  auto root = call("GET", "/", "", {.host = "127.0.0.1:8776"});
  EXPECT_EQ(root.first, 300);
  ASSERT_EQ(root.second["versions"].size(), 1u);
  const json& v = root.second["versions"][0];
  EXPECT_EQ(v["id"], "v3.0");
  EXPECT_EQ(v["status"], "CURRENT");
  EXPECT_EQ(v["min_version"], "3.0");
  EXPECT_EQ(v["version"], kMaxApiVersion.text());
  EXPECT_FALSE(v["updated"].get<std::string>().empty());
  EXPECT_EQ(v["links"][0]["href"], "http://127.0.0.1:8776/v3/");
  EXPECT_EQ(v["media-types"][0]["base"], "application/json");
  EXPECT_TRUE(header("OpenStack-API-Version").empty()) << "the root document has no version of its own";
  // A client asking for any version still gets the list (cinderclient asks with its own maximum).
  EXPECT_EQ(call("GET", "/", "", {.api_version = "volume 3.70"}).first, 300);
  EXPECT_EQ(call("GET", "/v3/").first, 200);
  EXPECT_TRUE(VolumeApi::open_to_anyone("GET", "/"));
  EXPECT_TRUE(VolumeApi::open_to_anyone("GET", "/v3/"));
  EXPECT_FALSE(VolumeApi::open_to_anyone("GET", "/v3/p/volumes"));
  EXPECT_FALSE(VolumeApi::open_to_anyone("POST", "/"));
}

TEST_F(VolumeApiTest, MicroversionHeaderIsHonouredAndEchoed) {
  EXPECT_EQ(call("GET", "/v3/p/volumes").first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "volume 3.0");
  EXPECT_EQ(header("Vary"), "OpenStack-API-Version");
  EXPECT_EQ(call_at(27, "GET", "/v3/p/volumes").first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "volume 3.27");
  EXPECT_EQ(call("GET", "/v3/p/volumes", "", {.api_version = "volume latest"}).first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "volume " + kMaxApiVersion.text());
  EXPECT_EQ(call("GET", "/v3/p/volumes", "", {.api_version = "compute 2.1, volume 3.12"}).first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "volume 3.12");
  EXPECT_EQ(call("GET", "/v3/p/volumes", "", {.api_version = "compute 2.60"}).first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "volume 3.0");
  for (const char* outside : {"volume 3.999", "volume 2.0", "volume 4.0"}) {
    auto r = call("GET", "/v3/p/volumes", "", {.api_version = outside});
    EXPECT_EQ(r.first, 406) << outside;
    EXPECT_NE(fault(r, "computeFault").find(kMaxApiVersion.text()), std::string::npos);
  }
  for (const char* garbage : {"volume 3", "volume 3.x", "volume", "volume 03.1", "volume -3.1"}) {
    auto r = call("GET", "/v3/p/volumes", "", {.api_version = garbage});
    EXPECT_EQ(r.first, garbage == std::string("volume") ? 200 : 400) << garbage;
  }
  // Views follow the version: shared_targets arrived in 3.48.
  const std::string id = create_volume();
  EXPECT_FALSE(call_at(47, "GET", "/v3/p/volumes/" + id).second["volume"].contains("shared_targets"));
  EXPECT_EQ(call_at(48, "GET", "/v3/p/volumes/" + id).second["volume"]["shared_targets"], false);
}

TEST_F(VolumeApiTest, CreateAcceptsCinderclientsWholeBody) {
  // What cinderclient 9.1 sends for `cinder create --name x 1`.
  auto r = call_at(53, "POST", "/v3/p/volumes", R"({"volume": {"size": 1, "consistencygroup_id": null,
      "snapshot_id": null, "name": "x", "description": null, "volume_type": null, "availability_zone": null,
      "metadata": {"purpose": "test"}, "imageRef": null, "source_volid": null, "backup_id": null}})");
  ASSERT_EQ(r.first, 202) << r.second.dump();
  EXPECT_EQ(r.second["volume"]["name"], "x");
  EXPECT_EQ(r.second["volume"]["metadata"]["purpose"], "test");
  const std::string id = r.second["volume"]["id"];
  EXPECT_EQ(call("GET", "/v3/p/volumes/" + id).second["volume"]["metadata"]["purpose"], "test");
  // Other fields of Cinder's schema, null or harmless.
  EXPECT_EQ(call("POST", "/v3/p/volumes", R"({"volume": {"size": 1, "group_id": null, "multiattach": false,
      "image_id": null, "display_name": "old-style"}, "OS-SCH-HNT:scheduler_hints": null})").first, 202);
  EXPECT_EQ(call("GET", "/v3/p/volumes?name=old-style").second["volumes"].size(), 1u);
}

TEST_F(VolumeApiTest, CreateRefusesWhatVolgateCannotHonourByName) {
  const std::string uuid = "0b7d9a3e-5c2f-4a51-9b1e-2f6c8d4e7a10";
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"({"volume": {"size": 1, "backup_id": ")" + uuid + R"(", "source_volid": ")" + uuid + R"("}})", "one source"},
      {R"({"volume": {"size": 1, "consistencygroup_id": ")" + uuid + R"("}})", "consistency group"},
      {R"({"volume": {"size": 1, "group_id": "g1"}})", "group"},
      {R"({"volume": {"size": 1, "multiattach": true}})", "multiattach"},
      {R"({"volume": {"size": 1, "multiattach": "yes"}})", "multiattach"},
      {R"({"volume": {"size": 1}, "OS-SCH-HNT:scheduler_hints": {"same_host": ["x"]}})", "hints"},
      {R"({"volume": {"size": 1, "metadata": {"": "v"}}})", "empty"},
      {R"({"volume": {"size": 1, "metadata": {"k": 1}}})", "string"},
      {R"({"volume": {"size": 1, "metadata": {"k": ")" + std::string(256, 'v') + R"("}}})", "255"},
      {R"({"volume": {"size": 1, "metadata": {")" + std::string(256, 'k') + R"(": "v"}}})", "255"},
      {R"({"volume": {"size": 1, "metadata": {"k?": "v"}}})", "letters"},
      {R"({"volume": {"size": 1, "name": ")" + std::string(256, 'n') + R"("}})", "255"},
      {R"({"volume": {"size": 1, "description": ")" + std::string(256, 'd') + R"("}})", "255"},
      {R"({"volume": {"size": 1, "imageRef": "a.img", "image_id": "b.img"}})", "different"},
  };
  for (const auto& [body, words] : refused) {
    auto r = call_at(53, "POST", "/v3/p/volumes", body);
    EXPECT_EQ(r.first, 400) << body;
    EXPECT_NE(fault(r, "badRequest").find(words), std::string::npos) << r.second.dump();
  }
  // A volume from a backup (3.47): refused before, and an unknown backup is not found.
  auto r = call_at(46, "POST", "/v3/p/volumes", R"({"volume": {"size": 1, "backup_id": ")" + uuid + R"("}})");
  EXPECT_EQ(r.first, 400);
  EXPECT_NE(fault(r, "badRequest").find("3.47"), std::string::npos) << r.second.dump();
  EXPECT_EQ(call_at(47, "POST", "/v3/p/volumes", R"({"volume": {"backup_id": ")" + uuid + R"("}})").first, 404);
  // From 3.53 the source ids must be UUIDs (before, an unknown id is simply not found).
  EXPECT_EQ(call_at(53, "POST", "/v3/p/volumes", R"({"volume": {"snapshot_id": "nope"}})").first, 400);
  EXPECT_EQ(call_at(52, "POST", "/v3/p/volumes", R"({"volume": {"snapshot_id": "nope"}})").first, 404);
  EXPECT_EQ(call("GET", "/v3/p/volumes").second["volumes"].size(), 0u) << "nothing created by refused requests";
  EXPECT_EQ(call("GET", "/v3/p/os-quota-sets/p?usage=true").second["quota_set"]["volumes"]["in_use"], 0);
}

TEST_F(VolumeApiTest, VolumeMetadataRoutes) {
  const std::string id = create_volume(R"({"volume": {"size": 1, "metadata": {"a": "1"}}})");
  const std::string base = "/v3/p/volumes/" + id + "/metadata";
  auto merged = call("POST", base, R"({"metadata": {"b": "2"}})");
  ASSERT_EQ(merged.first, 200) << merged.second.dump();
  EXPECT_EQ(merged.second["metadata"], json({{"a", "1"}, {"b", "2"}}));
  auto replaced = call("PUT", base, R"({"metadata": {"c": "3"}})");
  EXPECT_EQ(replaced.second["metadata"], json({{"c", "3"}}));
  EXPECT_EQ(call("GET", base + "/c").second["meta"]["c"], "3");
  EXPECT_EQ(call("PUT", base + "/c", R"({"meta": {"c": "4"}})").second["meta"]["c"], "4");
  EXPECT_EQ(call("PUT", base + "/c", R"({"meta": {"d": "4"}})").first, 400) << "key differs from the path";
  EXPECT_EQ(call("PUT", base + "/c", R"({"meta": {"c": "4", "e": "5"}})").first, 400);
  EXPECT_EQ(call("DELETE", base + "/c").first, 200);
  EXPECT_EQ(call("DELETE", base + "/c").first, 404);
  EXPECT_EQ(call("GET", base + "/c").first, 404);
  EXPECT_EQ(call("POST", base, R"({"metadata": {"k": 5}})").first, 400);
  EXPECT_EQ(call("POST", base, R"({"meta": {"k": "v"}})").first, 400);
  EXPECT_EQ(call("GET", base).second["metadata"], json::object()) << "refused requests change nothing";
  // Another project's member does not find it (an admin would: see the projects and roles tests).
  RequestHeaders other;
  other.caller = {.project = "other", .role = Role::member};
  EXPECT_EQ(call("GET", "/v3/other/volumes/" + id + "/metadata", "", other).first, 404);
  // Since 3.15: an ETag, and If-Match refuses a stale update with 412.
  call_at(15, "GET", base);
  const std::string etag = header("ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(call("PUT", base, R"({"metadata": {"x": "1"}})", {.api_version = "volume 3.15", .if_match = etag}).first, 200);
  auto stale = call("PUT", base, R"({"metadata": {"y": "1"}})", {.api_version = "volume 3.15", .if_match = etag});
  EXPECT_EQ(stale.first, 412);
  EXPECT_EQ(call("GET", base).second["metadata"], json({{"x", "1"}}));
  // Metadata survives other changes of the row (extend rewrites it).
  EXPECT_EQ(call("POST", "/v3/p/volumes/" + id + "/action", R"({"os-extend": {"new_size": 2}})").first, 202);
  EXPECT_EQ(call("GET", "/v3/p/volumes/" + id).second["volume"]["metadata"], json({{"x", "1"}}));
}

TEST_F(VolumeApiTest, RenameVolumesAndSnapshots) {
  const std::string id = create_volume();
  auto renamed = call("PUT", "/v3/p/volumes/" + id, R"({"volume": {"name": "new", "description": "d2"}})");
  ASSERT_EQ(renamed.first, 200) << renamed.second.dump();
  EXPECT_EQ(renamed.second["volume"]["name"], "new");
  EXPECT_EQ(renamed.second["volume"]["description"], "d2");
  EXPECT_EQ(call("PUT", "/v3/p/volumes/" + id, R"({"volume": {"metadata": {"k": "v"}}})").second["volume"]["metadata"],
            json({{"k", "v"}}));
  EXPECT_EQ(call("PUT", "/v3/p/volumes/" + id, R"({"volume": {"size": 5}})").first, 400);
  EXPECT_EQ(call_at(53, "PUT", "/v3/p/volumes/" + id, R"({"volume": {}})").first, 400);
  EXPECT_EQ(call("PUT", "/v3/p/volumes/nope", R"({"volume": {"name": "x"}})").first, 404);
  auto snap = call("POST", "/v3/p/snapshots", R"({"snapshot": {"volume_id": ")" + id + R"(", "force": "False",
      "name": "s", "description": null, "metadata": {}}})");
  ASSERT_EQ(snap.first, 202) << snap.second.dump();
  const std::string sid = snap.second["snapshot"]["id"];
  auto srenamed = call("PUT", "/v3/p/snapshots/" + sid, R"({"snapshot": {"name": "s2"}})");
  EXPECT_EQ(srenamed.first, 200);
  EXPECT_EQ(srenamed.second["snapshot"]["name"], "s2");
  EXPECT_EQ(call("PUT", "/v3/p/snapshots/" + sid, R"({"snapshot": {"volume_id": "x"}})").first, 400);
  EXPECT_EQ(call("GET", "/v3/p/snapshots/" + sid).second["snapshot"]["name"], "s2");
}

TEST_F(VolumeApiTest, ListsFilterSortAndPage) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(create_volume(R"({"volume": {"size": )" + std::to_string(i + 1) + R"(, "name": "v)" +
                                std::to_string(i) + R"("}})"));
  auto names = [](const json& list) {
    std::vector<std::string> out;
    for (const auto& v : list["volumes"]) out.push_back(v["name"]);
    return out;
  };
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?sort=size:desc").second),
            (std::vector<std::string>{"v3", "v2", "v1", "v0"}));
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?sort=name:asc&limit=2").second),
            (std::vector<std::string>{"v0", "v1"}));
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?sort=name:asc&limit=2&marker=" + ids[1]).second),
            (std::vector<std::string>{"v2", "v3"}));
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?sort_key=name&sort_dir=asc&offset=3").second),
            (std::vector<std::string>{"v3"}));
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?all_tenants=1&name=v2").second), (std::vector<std::string>{"v2"}));
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?status=available").second["volumes"].size(), 4u);
  auto counted = call_at(45, "GET", "/v3/p/volumes/detail?with_count=true&limit=1");
  EXPECT_EQ(counted.second["volumes"].size(), 1u);
  EXPECT_EQ(counted.second["count"], 4);
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?colour=red").first, 400);
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?sort=colour").first, 400);
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?sort=name:sideways").first, 400);
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?limit=-1").first, 400);
  EXPECT_EQ(call("GET", "/v3/p/volumes/detail?marker=nope").first, 404);
  call("POST", "/v3/p/volumes/" + ids[0] + "/metadata", R"({"metadata": {"tier": "gold"}})");
  EXPECT_EQ(names(call("GET", "/v3/p/volumes/detail?metadata=%7B%27tier%27%3A+%27gold%27%7D").second),
            (std::vector<std::string>{"v0"}));
  auto summary = call_at(36, "GET", "/v3/p/volumes/summary");
  ASSERT_EQ(summary.first, 200) << summary.second.dump();
  EXPECT_EQ(summary.second["volume-summary"]["total_count"], 4);
  EXPECT_EQ(summary.second["volume-summary"]["total_size"], 10);
  EXPECT_EQ(summary.second["volume-summary"]["metadata"]["tier"], json::array({"gold"}));
  EXPECT_EQ(call_at(11, "GET", "/v3/p/volumes/summary").first, 404) << "summary arrived in 3.12";
}

TEST_F(VolumeApiTest, LimitsZonesAndServices) {
  create_volume(R"({"volume": {"size": 3}})");
  auto limits = call("GET", "/v3/p/limits");
  ASSERT_EQ(limits.first, 200) << limits.second.dump();
  const json& absolute = limits.second["limits"]["absolute"];
  EXPECT_EQ(absolute["maxTotalVolumes"], 10);
  EXPECT_EQ(absolute["totalVolumesUsed"], 1);
  EXPECT_EQ(absolute["totalGigabytesUsed"], 3);
  EXPECT_EQ(absolute["maxTotalVolumeGigabytes"], 1000);
  EXPECT_EQ(limits.second["limits"]["rate"], json::array());
  EXPECT_EQ(call("GET", "/v3/p/limits?tenant_id=q").second["limits"]["absolute"]["totalVolumesUsed"], 0);
  EXPECT_EQ(call("GET", "/v3/p/limits?tenant_id=bad%20name").first, 400);

  auto zones = call("GET", "/v3/p/os-availability-zone");
  ASSERT_EQ(zones.second["availabilityZoneInfo"].size(), 1u);
  EXPECT_EQ(zones.second["availabilityZoneInfo"][0]["zoneName"], "nova");
  EXPECT_EQ(zones.second["availabilityZoneInfo"][0]["zoneState"]["available"], true);

  auto services = call_at(49, "GET", "/v3/p/os-services");
  ASSERT_EQ(services.second["services"].size(), 2u) << services.second.dump();
  const json& scheduler = services.second["services"][0];
  EXPECT_EQ(scheduler["binary"], "cinder-scheduler");
  EXPECT_EQ(scheduler["state"], "up");
  const json& volume = services.second["services"][1];
  EXPECT_EQ(volume["binary"], "cinder-volume");
  EXPECT_EQ(volume["host"], "volgate@default");
  EXPECT_EQ(volume["zone"], "nova");
  EXPECT_EQ(volume["status"], "enabled");
  EXPECT_EQ(volume["backend_state"], "up");
  EXPECT_EQ(call("GET", "/v3/p/os-services?binary=cinder-volume").second["services"].size(), 1u);
  EXPECT_EQ(call("GET", "/v3/p/os-services?host=elsewhere").second["services"].size(), 0u);
}

TEST_F(VolumeApiTest, QuotaUpdateTakesCinderclientsBody) {
  create_volume(R"({"volume": {"size": 2}})");
  auto r = call("PUT", "/v3/p/os-quota-sets/p", R"({"quota_set": {"tenant_id": "p", "volumes": 5}})");
  ASSERT_EQ(r.first, 200) << r.second.dump();
  EXPECT_EQ(r.second["quota_set"]["volumes"], 5);
  EXPECT_EQ(call("PUT", "/v3/p/os-quota-sets/p?skip_validation=False", R"({"quota_set": {"gigabytes": 1}})").first,
            400);
  EXPECT_EQ(call("GET", "/v3/p/os-quota-sets/p").second["quota_set"]["gigabytes"], 1000) << "nothing changed";
  EXPECT_EQ(call("GET", "/v3/p/os-quota-sets/p/defaults").second["quota_set"]["volumes"], 10);
  EXPECT_EQ(call("GET", "/v3/p/types/default").second["volume_type"]["name"], "default");
  EXPECT_EQ(call("GET", "/v3/p/types/encrypted/extra_specs").second["extra_specs"], json::object());
}

TEST_F(VolumeApiTest, ResourcesNotOfferedSaySo) {
  for (const char* path : {"/v3/p/os-backup-services", "/v3/p/groups", "/v3/p/os-volume-transfer/detail",
                           "/v3/p/qos-specs", "/v3/p/consistencygroups/detail", "/v3/p/os-volume-manage"}) {
    auto r = call("GET", path);
    EXPECT_EQ(r.first, 404) << path;
    EXPECT_NE(fault(r, "itemNotFound").find("volgate does not offer"), std::string::npos) << r.second.dump();
  }
  EXPECT_NE(fault(call("GET", "/v3/p/bogus"), "itemNotFound").find("Unknown path"), std::string::npos);
  auto cascade = call("DELETE", "/v3/p/volumes/" + create_volume() + "?cascade=True");
  EXPECT_EQ(cascade.first, 400);
  EXPECT_NE(fault(cascade, "badRequest").find("cascade"), std::string::npos);
}

// ------------------------------------------------------------------------------ servers

class FakeVirt final : public VirtDriver {
 public:
  std::vector<Server> list_servers() override {
    return {{"11111111-1111-1111-1111-111111111111", "web", ServerState::running, true},
            {"22222222-2222-2222-2222-222222222222", "db", ServerState::shut_off, true},
            {"33333333-3333-3333-3333-333333333333", "db", ServerState::paused, false}};
  }
  std::optional<Server> find_server(const std::string& id) override {
    std::optional<Server> found;
    int named = 0;
    for (auto& s : list_servers()) {
      if (s.uuid == id) return s;
      if (s.name == id) found = s, ++named;
    }
    return named == 1 ? found : std::nullopt;
  }
  std::vector<GuestDisk> disks(const std::string&, bool) override { return {}; }
  void attach_disk(const std::string&, const DiskRequest&) override {}
  void detach_disk(const std::string&, const std::string&) override {}
  void start_server(const std::string& uuid) override { power_calls.push_back("start " + uuid); }
  bool stop_server(const std::string& uuid, std::chrono::milliseconds) override {
    power_calls.push_back("stop " + uuid);
    return true;
  }
  // The calls of every FakeVirt, in order (the Hypervisor owns the driver it made).
  static inline std::vector<std::string> power_calls;
};

TEST_F(VolumeApiTest, ServersAreTheHypervisorsDomainsInNovasShapes) {
  Hypervisor hypervisor("test:///fake", [](const std::string&) { return std::make_unique<FakeVirt>(); });
  api = std::make_unique<VolumeApi>(*service, &hypervisor);
  auto r = call("GET", "/v2.1/servers");
  ASSERT_EQ(r.first, 200) << r.second.dump();
  ASSERT_EQ(r.second["servers"].size(), 3u);
  EXPECT_EQ(r.second["servers"][0]["name"], "web");
  EXPECT_FALSE(r.second["servers"][0].contains("status"));
  r = call("GET", "/v2.1/p/servers/detail");
  ASSERT_EQ(r.first, 200);
  EXPECT_EQ(r.second["servers"][0]["status"], "ACTIVE");
  EXPECT_EQ(r.second["servers"][1]["status"], "SHUTOFF");
  EXPECT_EQ(r.second["servers"][2]["status"], "PAUSED");
  r = call("GET", "/v2.1/servers/web");
  ASSERT_EQ(r.first, 200);
  EXPECT_EQ(r.second["server"]["id"], "11111111-1111-1111-1111-111111111111");
  EXPECT_EQ(r.second["server"]["OS-EXT-STS:vm_state"], "active");
  // Two domains are called db: the name is ambiguous, the UUID is not.
  EXPECT_FALSE(fault(call("GET", "/v2.1/servers/db"), "itemNotFound").empty());
  EXPECT_EQ(call("GET", "/v2.1/servers/22222222-2222-2222-2222-222222222222").first, 200);
}

TEST_F(VolumeApiTest, ComputeMicroversionsAreNegotiatedAsNovaDoes) {
  Hypervisor hypervisor("test:///fake", [](const std::string&) { return std::make_unique<FakeVirt>(); });
  api = std::make_unique<VolumeApi>(*service, &hypervisor);
  // novaclient reads the document at its endpoint before anything else, without a version.
  auto doc = call("GET", "/v2.1");
  ASSERT_EQ(doc.first, 200) << doc.second.dump();
  EXPECT_EQ(doc.second["version"]["id"], "v2.1");
  EXPECT_EQ(doc.second["version"]["min_version"], "2.1");
  EXPECT_EQ(doc.second["version"]["version"], kMaxComputeVersion.text());
  EXPECT_TRUE(VolumeApi::open_to_anyone("GET", "/v2.1/"));
  EXPECT_FALSE(VolumeApi::open_to_anyone("GET", "/v2.1/servers"));

  call("GET", "/v2.1/servers/web");
  EXPECT_EQ(header("OpenStack-API-Version"), "compute 2.1");  // none asked for: the base version
  EXPECT_EQ(header("x-compute-request-id").substr(0, 4), "req-");
  EXPECT_EQ(header("x-openstack-request-id"), header("x-compute-request-id"));
  auto r = call("GET", "/v2.1/servers/web", "", {.api_version = "compute 2.47, volume 3.1"});
  EXPECT_EQ(header("OpenStack-API-Version"), "compute 2.47");
  EXPECT_EQ(r.second["server"]["flavor"]["original_name"], "libvirt-domain");  // the flavor embedded from 2.47
  r = call("GET", "/v2.1/servers/web", "", {.nova_api_version = "2.9"});
  EXPECT_EQ(header("X-OpenStack-Nova-API-Version"), "2.9");
  EXPECT_EQ(r.second["server"]["locked"], false);
  EXPECT_TRUE(r.second["server"]["flavor"].contains("id"));
  EXPECT_EQ(call("GET", "/v2.1/servers", "", {.api_version = "compute latest"}).first, 200);
  EXPECT_EQ(header("OpenStack-API-Version"), "compute " + kMaxComputeVersion.text());
  EXPECT_EQ(call("GET", "/v2.1/servers", "", {.api_version = "compute 2.200"}).first, 406);
  EXPECT_EQ(call("GET", "/v2.1/servers", "", {.api_version = "compute 3.1"}).first, 406);
  EXPECT_EQ(call("GET", "/v2.1/servers", "", {.nova_api_version = "two"}).first, 400);
  // A volume version in the header does not make a compute request fail, nor the other way.
  EXPECT_EQ(call("GET", "/v2.1/servers", "", {.api_version = "volume 3.999"}).first, 200);
  EXPECT_EQ(call("GET", "/v3/p/volumes", "", {.api_version = "compute 2.999"}).first, 200);
  EXPECT_EQ(header("x-openstack-request-id").substr(0, 4), "req-");

  // Nova's list filters: name is a regular expression, status one of Nova's.
  r = call("GET", "/v2.1/servers/detail?name=%5Ed");
  ASSERT_EQ(r.second["servers"].size(), 2u);
  r = call("GET", "/v2.1/servers/detail?status=paused");
  ASSERT_EQ(r.second["servers"].size(), 1u);
  EXPECT_EQ(r.second["servers"][0]["id"], "33333333-3333-3333-3333-333333333333");
  EXPECT_EQ(call("GET", "/v2.1/servers?name=(").first, 400);
}

TEST_F(VolumeApiTest, ServerStartAndStopAreNovasActions) {
  FakeVirt::power_calls.clear();
  Hypervisor hypervisor("test:///fake", [](const std::string&) { return std::make_unique<FakeVirt>(); });
  auto compute = std::make_unique<ComputeService>(*store, *service, hypervisor);
  api = std::make_unique<VolumeApi>(*service, &hypervisor, compute.get());
  const std::string web = "/v2.1/servers/11111111-1111-1111-1111-111111111111/action";
  const std::string db = "/v2.1/p/servers/22222222-2222-2222-2222-222222222222/action";
  EXPECT_EQ(fault(call("POST", web, R"({"os-start": null})"), "conflictingRequest"),
            "Cannot 'start' instance 11111111-1111-1111-1111-111111111111 while it is in vm_state active");
  EXPECT_NE(fault(call("POST", db, R"({"os-stop": null})"), "conflictingRequest").find("vm_state stopped"),
            std::string::npos);
  EXPECT_EQ(call("POST", db, R"({"os-start": null})").first, 202);
  EXPECT_EQ(call("POST", "/v2.1/servers/web/action", R"({"os-stop": null})").first, 202);
  for (const char* body : {R"({"reboot": {"type": "HARD"}})", R"({"os-start": {"x": 1}})", "{}",
                           R"({"os-start": null, "os-stop": null})", "[]"})
    EXPECT_FALSE(fault(call("POST", web, body), "badRequest").empty()) << body;
  EXPECT_FALSE(fault(call("POST", "/v2.1/servers/nope/action", R"({"os-start": null})"), "itemNotFound").empty());
  compute.reset();  // waits for the stop, which runs in the background
  EXPECT_EQ(FakeVirt::power_calls,
            (std::vector<std::string>{"start 22222222-2222-2222-2222-222222222222",
                                      "stop 11111111-1111-1111-1111-111111111111"}));
  api.reset();
}

TEST_F(VolumeApiTest, ServersWithoutAReachableHypervisorAre503) {
  Hypervisor down("qemu:///nowhere", [](const std::string&) -> std::unique_ptr<VirtDriver> {
    throw VirtError("Failed to connect socket");
  });
  api = std::make_unique<VolumeApi>(*service, &down);
  auto message = fault(call("GET", "/v2.1/servers"), "serviceUnavailable");
  EXPECT_NE(message.find("Failed to connect socket"), std::string::npos) << message;
  Hypervisor none("");
  api = std::make_unique<VolumeApi>(*service, &none);
  EXPECT_EQ(call("GET", "/v2.1/servers").first, 503);
  // Without a hypervisor the volume API is unchanged.
  EXPECT_EQ(call("GET", "/v3/p/volumes").first, 200);
}

// ------------------------------------------------------------------ projects and roles

RequestHeaders as(const std::string& project, Role role, const std::string& api_version = "volume 3.53") {
  RequestHeaders h;
  h.api_version = api_version;
  h.caller = {.project = project, .role = role};
  return h;
}

TEST_F(VolumeApiTest, AMemberSeesAndActsOnItsProjectsObjectsOnly) {
  const auto alice = as("alpha", Role::member), bob = as("beta", Role::member), admin = as("ops", Role::admin);
  auto made = call("POST", "/v3/beta/volumes", R"({"volume": {"size": 1, "name": "b"}})", bob);
  ASSERT_EQ(made.first, 202) << made.second.dump();
  const std::string vol = made.second["volume"]["id"];
  made = call("POST", "/v3/beta/snapshots", R"({"snapshot": {"volume_id": ")" + vol + R"("}})", bob);
  ASSERT_EQ(made.first, 202) << made.second.dump();
  const std::string snap = made.second["snapshot"]["id"];
  made = call("POST", "/v3/beta/attachments", R"({"attachment": {"volume_uuid": ")" + vol + R"("}})", bob);
  ASSERT_EQ(made.first, 200) << made.second.dump();
  const std::string att = made.second["attachment"]["id"];
  // The owner reaches each.
  EXPECT_EQ(call("GET", "/v3/beta/volumes/" + vol, "", bob).first, 200);
  EXPECT_EQ(call("GET", "/v3/beta/snapshots/" + snap, "", bob).first, 200);
  EXPECT_EQ(call("GET", "/v3/beta/attachments/" + att, "", bob).first, 200);

  // Another member, through its own project's URL: none of them exists.
  struct Request {
    const char* method;
    std::string path;
    std::string body;
  };
  const std::vector<Request> reach = {
      {"GET", "/volumes/" + vol, ""},
      {"PUT", "/volumes/" + vol, R"({"volume": {"name": "mine"}})"},
      {"DELETE", "/volumes/" + vol, ""},
      {"POST", "/volumes/" + vol + "/action", R"({"os-extend": {"new_size": 2}})"},
      {"POST", "/volumes/" + vol + "/action", R"({"os-reserve": null})"},
      {"GET", "/volumes/" + vol + "/metadata", ""},
      {"PUT", "/volumes/" + vol + "/metadata", R"({"metadata": {"k": "v"}})"},
      {"GET", "/snapshots/" + snap, ""},
      {"PUT", "/snapshots/" + snap, R"({"snapshot": {"name": "mine"}})"},
      {"DELETE", "/snapshots/" + snap, ""},
      {"POST", "/snapshots", R"({"snapshot": {"volume_id": ")" + vol + R"("}})"},
      {"POST", "/volumes", R"({"volume": {"source_volid": ")" + vol + R"("}})"},
      {"POST", "/volumes", R"({"volume": {"snapshot_id": ")" + snap + R"("}})"},
      {"GET", "/attachments/" + att, ""},
      {"PUT", "/attachments/" + att, R"({"attachment": {"connector": {"host": "h"}}})"},
      {"POST", "/attachments/" + att + "/action", R"({"os-complete": null})"},
      {"DELETE", "/attachments/" + att, ""},
      {"POST", "/attachments", R"({"attachment": {"volume_uuid": ")" + vol + R"("}})"},
  };
  for (const auto& r : reach) {
    auto answer = call(r.method, "/v3/alpha" + r.path, r.body, alice);
    EXPECT_EQ(answer.first, 404) << r.method << " " << r.path << ": " << answer.second.dump();
    // Through the other project's URL: refused before anything is looked up.
    answer = call(r.method, "/v3/beta" + r.path, r.body, alice);
    EXPECT_EQ(answer.first, 400) << r.method << " " << r.path << ": " << answer.second.dump();
  }
  // Lists: its own only, all_tenants or not.
  for (const char* list : {"/volumes", "/volumes/detail", "/snapshots", "/snapshots/detail", "/attachments"}) {
    for (const char* query : {"", "?all_tenants=1"}) {
      auto r = call("GET", std::string("/v3/alpha") + list + query, "", alice);
      ASSERT_EQ(r.first, 200) << list << query << ": " << r.second.dump();
      EXPECT_TRUE(r.second.begin()->empty()) << list << query << ": " << r.second.dump();
    }
  }
  EXPECT_EQ(call("GET", "/v3/alpha/volumes/summary?all_tenants=1", "", alice).second["volume-summary"]["total_count"], 0);
  // Nothing changed for the owner.
  auto shown = call("GET", "/v3/beta/volumes/" + vol, "", bob);
  EXPECT_EQ(shown.second["volume"]["name"], "b");
  EXPECT_EQ(shown.second["volume"]["status"], "reserved");
  EXPECT_EQ(shown.second["volume"]["size"], 1);

  // An admin's all_tenants lists span every project.
  for (const char* list : {"/volumes/detail", "/snapshots", "/attachments"}) {
    auto r = call("GET", std::string("/v3/ops") + list + "?all_tenants=1", "", admin);
    ASSERT_EQ(r.first, 200) << r.second.dump();
    EXPECT_EQ(r.second.begin()->size(), 1u) << list << ": " << r.second.dump();
    EXPECT_TRUE(call("GET", std::string("/v3/ops") + list, "", admin).second.begin()->empty()) << list;
  }
  auto all = call("GET", "/v3/ops/volumes/detail?all_tenants=1", "", admin);
  EXPECT_EQ(all.second["volumes"][0]["os-vol-tenant-attr:tenant_id"], "beta");
  // ... and it acts in any project its URL names, and reaches any project's object through any
  // project's URL (the request then acts in the object's project).
  EXPECT_EQ(call("GET", "/v3/beta/volumes/" + vol, "", admin).first, 200);
  EXPECT_EQ(call("GET", "/v3/ops/volumes/" + vol, "", admin).second["volume"]["os-vol-tenant-attr:tenant_id"], "beta");
  EXPECT_EQ(call("GET", "/v3/ops/snapshots/" + snap + "?x=1", "", admin).first, 200);
  EXPECT_EQ(call("GET", "/v3/ops/attachments/" + att, "", admin).first, 200);
  EXPECT_EQ(call("PUT", "/v3/ops/volumes/" + vol, R"({"volume": {"description": "by the admin"}})", admin).first, 200);
  EXPECT_EQ(call("GET", "/v3/beta/volumes/" + vol, "", bob).second["volume"]["description"], "by the admin");
  EXPECT_EQ(call("GET", "/v3/ops/volumes/00000000-0000-4000-8000-000000000000", "", admin).first, 404);
}

TEST_F(VolumeApiTest, AdminActionsAreForbiddenToMembers) {
  const auto alice = as("alpha", Role::member), admin = as("ops", Role::admin);
  auto made = call("POST", "/v3/alpha/volumes", R"({"volume": {"size": 1}})", alice);
  ASSERT_EQ(made.first, 202);
  const std::string vol = made.second["volume"]["id"];
  const std::string action = "/v3/alpha/volumes/" + vol + "/action";
  made = call("POST", "/v3/alpha/attachments", R"({"attachment": {"volume_uuid": ")" + vol + R"("}})", alice);
  ASSERT_EQ(made.first, 200) << made.second.dump();
  // 403 on its own volume, and on one that does not exist: the answer says nothing of ids.
  for (const auto& target : {action, std::string("/v3/alpha/volumes/00000000-0000-4000-8000-000000000000/action")}) {
    for (const char* body : {R"({"os-force_detach": {}})", R"({"os-reset_status": {"status": "available"}})",
                             R"({"os-force_delete": null})"}) {
      auto r = call("POST", target, body, alice);
      EXPECT_EQ(r.first, 403) << body << ": " << r.second.dump();
      EXPECT_NE(fault(r, "forbidden").find("Only an admin may do os-"), std::string::npos);
    }
  }
  EXPECT_EQ(call("GET", "/v3/alpha/volumes/" + vol, "", alice).second["volume"]["status"], "reserved");
  EXPECT_EQ(call("GET", "/v3/alpha/os-services", "", alice).first, 403);
  EXPECT_EQ(call("GET", "/v3/alpha/scheduler-stats/get_pools", "", alice).first, 403);
  EXPECT_EQ(call("PUT", "/v3/alpha/os-quota-sets/alpha", R"({"quota_set": {"volumes": 100}})", alice).first, 403);
  EXPECT_EQ(call("GET", "/v3/alpha/os-quota-sets/alpha", "", alice).first, 200);
  // The owner's own actions stay open to it.
  EXPECT_NE(call("POST", action, R"({"os-begin_detaching": null})", alice).first, 403);
  // The admin force-detaches it (through the project's URL, as the all_tenants list names it).
  auto r = call("POST", action, R"({"os-force_detach": {}})", admin);
  EXPECT_EQ(r.first, 202) << r.second.dump();
  EXPECT_EQ(call("GET", "/v3/alpha/volumes/" + vol, "", alice).second["volume"]["status"], "available");
  EXPECT_EQ(call("PUT", "/v3/ops/os-quota-sets/alpha", R"({"quota_set": {"volumes": 100}})", admin).first, 200);
  EXPECT_EQ(call("GET", "/v3/ops/os-services", "", admin).first, 200);
}

// Domains owned by projects (their volgate metadata), and one owned by none.
class OwnedServers final : public VirtDriver {
 public:
  std::vector<Server> list_servers() override {
    Server a{"aaaaaaaa-1111-1111-1111-111111111111", "web-a", ServerState::running, true};
    a.project = "alpha";
    Server b{"bbbbbbbb-2222-2222-2222-222222222222", "web-b", ServerState::running, true};
    b.project = "beta";
    Server none{"cccccccc-3333-3333-3333-333333333333", "unowned", ServerState::shut_off, true};
    return {a, b, none};
  }
  std::optional<Server> find_server(const std::string& id) override {
    for (auto& s : list_servers())
      if (s.uuid == id || s.name == id) return s;
    return std::nullopt;
  }
  std::vector<GuestDisk> disks(const std::string&, bool) override { return {}; }
  void attach_disk(const std::string&, const DiskRequest&) override {}
  void detach_disk(const std::string&, const std::string&) override {}
  void start_server(const std::string&) override {}
  bool stop_server(const std::string&, std::chrono::milliseconds) override { return true; }
};

TEST_F(VolumeApiTest, AMemberSeesItsProjectsServersOnly) {
  Hypervisor hypervisor("test:///fake", [](const std::string&) { return std::make_unique<OwnedServers>(); });
  api = std::make_unique<VolumeApi>(*service, &hypervisor);
  const auto alice = as("alpha", Role::member, ""), admin = as("ops", Role::admin, "");
  auto names = [](const json& list) {
    std::vector<std::string> out;
    for (const auto& s : list["servers"]) out.push_back(s["name"]);
    return out;
  };
  EXPECT_EQ(names(call("GET", "/v2.1/servers", "", alice).second), std::vector<std::string>{"web-a"});
  EXPECT_EQ(names(call("GET", "/v2.1/alpha/servers/detail", "", alice).second), std::vector<std::string>{"web-a"});
  EXPECT_EQ(names(call("GET", "/v2.1/servers", "", admin).second),
            (std::vector<std::string>{"web-a", "web-b", "unowned"}));
  auto shown = call("GET", "/v2.1/servers/web-a", "", alice);
  ASSERT_EQ(shown.first, 200);
  EXPECT_EQ(shown.second["server"]["tenant_id"], "alpha");
  // Another project's server, or one no project owns, is not there for a member: its page and
  // everything under it (answered before routing, so whatever the route would do).
  for (const std::string server : {"web-b", "bbbbbbbb-2222-2222-2222-222222222222", "unowned"}) {
    for (const std::string& path : {"/v2.1/servers/" + server, "/v2.1/alpha/servers/" + server + "/os-volume_attachments",
                                    "/v2.1/servers/" + server + "/os-instance-actions", "/v2.1/servers/" + server + "/action"}) {
      auto r = call(path.ends_with("action") ? "POST" : "GET", path, R"({"os-start": null})", alice);
      EXPECT_EQ(fault(r, "itemNotFound"), "Instance " + server + " could not be found.") << path;
    }
  }
  EXPECT_EQ(fault(call("GET", "/v2.1/servers/nope", "", alice), "itemNotFound"), "Instance nope could not be found.");
  EXPECT_EQ(call("GET", "/v2.1/beta/servers", "", alice).first, 400);
  EXPECT_EQ(call("GET", "/v2.1/servers/web-b", "", admin).first, 200);
  EXPECT_EQ(call("GET", "/v2.1/servers/unowned", "", admin).second["server"]["tenant_id"], "ops");
}

}  // namespace
}  // namespace volgate::controller

namespace volgate::controller {
namespace {

// Cinder's backup API: shapes, microversion fields, refusals by name, and a member that reaches
// its project's backups only (404 for another's, as for volumes).
TEST_F(VolumeApiTest, BackupsInCinderShapesScopedToTheirProject) {
  const auto alice = as("alpha", Role::member), bob = as("beta", Role::member), admin = as("ops", Role::admin);
  auto made = call("POST", "/v3/beta/volumes", R"({"volume": {"size": 1, "name": "b"}})", bob);
  ASSERT_EQ(made.first, 202) << made.second.dump();
  const std::string vol = made.second["volume"]["id"];
  // cinderclient's body: container and snapshot_id null, force and incremental false.
  auto created = call("POST", "/v3/beta/backups",
                      R"({"backup": {"volume_id": ")" + vol + R"(", "container": null, "name": "nightly",
                          "description": null, "incremental": false, "force": false, "snapshot_id": null}})",
                      bob);
  ASSERT_EQ(created.first, 202) << created.second.dump();
  const std::string id = created.second["backup"]["id"];
  EXPECT_EQ(created.second["backup"]["name"], "nightly");
  auto shown = call("GET", "/v3/beta/backups/" + id, "", bob);
  ASSERT_EQ(shown.first, 200);
  const json& b = shown.second["backup"];
  EXPECT_EQ(b["status"], "available");
  EXPECT_EQ(b["volume_id"], vol);
  EXPECT_EQ(b["size"], 1);
  EXPECT_EQ(b["is_incremental"], false);
  EXPECT_EQ(b["os-backup-project-attr:project_id"], "beta");  // 3.18
  EXPECT_EQ(b["metadata"], json::object());                    // 3.43
  EXPECT_TRUE(b["container"].is_null());
  EXPECT_FALSE(call("GET", "/v3/beta/backups/" + id, "", as("beta", Role::member, "volume 3.17"))
                   .second["backup"].contains("os-backup-project-attr:project_id"));
  EXPECT_EQ(call("GET", "/v3/beta/backups/detail?volume_id=" + vol, "", bob).second["backups"].size(), 1u);
  EXPECT_EQ(call("GET", "/v3/beta/backups?status=error", "", bob).second["backups"].size(), 0u);
  auto incremental = call("POST", "/v3/beta/backups",
                          R"({"backup": {"volume_id": ")" + vol + R"(", "incremental": true}})", bob);
  ASSERT_EQ(incremental.first, 202) << incremental.second.dump();
  const std::string inc = incremental.second["backup"]["id"];
  EXPECT_EQ(call("GET", "/v3/beta/backups/" + inc, "", bob).second["backup"]["volgate:parent_id"], id);
  EXPECT_EQ(call("GET", "/v3/beta/backups/" + id, "", bob).second["backup"]["has_dependent_backups"], true);

  // Refused by name: what volgate does not do.
  for (const auto& [body, word] :
       std::vector<std::pair<std::string, std::string>>{{R"("container": "c")", "container"},
                                                        {R"("snapshot_id": "0b7d9a3e-5c2f-4a51-9b1e-2f6c8d4e7a10")", "snapshot"},
                                                        {R"("availability_zone": "nova")", "availability_zone"},
                                                        {R"("bogus": 1)", "bogus"}}) {
    auto r = call("POST", "/v3/beta/backups", R"({"backup": {"volume_id": ")" + vol + R"(", )" + body + "}}", bob);
    EXPECT_EQ(r.first, 400) << body;
    EXPECT_NE(fault(r, "badRequest").find(word), std::string::npos) << r.second.dump();
  }
  EXPECT_EQ(call("POST", "/v3/beta/backups", R"({"backup": {"name": "x"}})", bob).first, 400);
  auto parent = call("DELETE", "/v3/beta/backups/" + id, "", bob);
  EXPECT_EQ(parent.first, 400);
  EXPECT_NE(fault(parent, "badRequest").find("incremental"), std::string::npos);
  EXPECT_EQ(call("POST", "/v3/beta/backups/" + id + "/action", R"({"os-reset_status": {"status": "error"}})", bob).first,
            403);

  // Another project's member: 404 for the backup, the restore and the delete; lists show none.
  EXPECT_EQ(call("GET", "/v3/alpha/backups/" + id, "", alice).first, 404);
  EXPECT_EQ(call("POST", "/v3/alpha/backups/" + id + "/restore", R"({"restore": {}})", alice).first, 404);
  EXPECT_EQ(call("DELETE", "/v3/alpha/backups/" + id, "", alice).first, 404);
  EXPECT_EQ(call("GET", "/v3/alpha/backups/detail?all_tenants=1", "", alice).second["backups"].size(), 0u);
  EXPECT_EQ(call("GET", "/v3/ops/backups/detail?all_tenants=1", "", admin).second["backups"].size(), 2u);
  EXPECT_EQ(call("GET", "/v3/ops/backups/" + id, "", admin).first, 200) << "an admin reaches it through any URL";

  // Restore to a new volume: Cinder's answer, the volume in the backup's project.
  auto restored = call("POST", "/v3/beta/backups/" + inc + "/restore", R"({"restore": {"name": "again"}})", bob);
  ASSERT_EQ(restored.first, 202) << restored.second.dump();
  EXPECT_EQ(restored.second["restore"]["backup_id"], inc);
  EXPECT_EQ(restored.second["restore"]["volume_name"], "again");
  const std::string target = restored.second["restore"]["volume_id"];
  EXPECT_EQ(call("GET", "/v3/beta/volumes/" + target, "", bob).second["volume"]["status"], "available");
  auto limits = call("GET", "/v3/beta/limits", "", bob).second["limits"]["absolute"];
  EXPECT_EQ(limits["totalBackupsUsed"], 2);
  EXPECT_EQ(limits["totalBackupGigabytesUsed"], 2);
  EXPECT_EQ(call("DELETE", "/v3/beta/backups/" + inc, "", bob).first, 202);
  EXPECT_EQ(call("DELETE", "/v3/beta/backups/" + id, "", bob).first, 202);
  EXPECT_EQ(call("GET", "/v3/beta/backups", "", bob).second["backups"].size(), 0u);
}

}  // namespace
}  // namespace volgate::controller
