// The API's policy on its own: which project a path names, what a member's URL may name, what
// only admins may do.
#include "controller/api/access_policy.hpp"

#include <gtest/gtest.h>

#include "controller/api/api_error.hpp"

namespace volgate::controller {
namespace {

const Caller kAlice{.project = "alpha", .role = Role::member};
const Caller kAdmin{.project = "ops", .role = Role::admin};

// The status authorize_request answers with: 0 when it lets the request through.
int decision(const Caller& caller, const char* method, const char* target) {
  try {
    authorize_request(caller, method, target);
    return 0;
  } catch (const ApiError& e) {
    return e.http_status();
  }
}

TEST(AccessPolicyTest, ProjectInPath) {
  EXPECT_EQ(project_in_path("/v3/alpha/volumes/x"), "alpha");
  EXPECT_EQ(project_in_path("/v3/alpha"), "alpha");
  EXPECT_EQ(project_in_path("/v3/alpha/volumes?all_tenants=1"), "alpha");
  EXPECT_EQ(project_in_path("/v2.1/beta/servers/s/os-volume_attachments"), "beta");
  EXPECT_EQ(project_in_path("/v2.1/servers/s"), "");  // Nova's bare form names none
  EXPECT_EQ(project_in_path("/v3"), "");
  EXPECT_EQ(project_in_path("/"), "");
}

TEST(AccessPolicyTest, AMemberActsInItsOwnProjectOnly) {
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/volumes"), 0);
  EXPECT_EQ(decision(kAlice, "DELETE", "/v3/alpha/volumes/x"), 0);
  EXPECT_EQ(decision(kAlice, "POST", "/v3/alpha/attachments"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v2.1/alpha/servers"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v2.1/servers/s"), 0);  // the bare form: its own project
  EXPECT_EQ(decision(kAlice, "GET", "/"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v3"), 0);
  // Another project's URL, whatever it asks for and whether or not the object exists.
  for (const char* target : {"/v3/beta/volumes", "/v3/beta/volumes/x", "/v3/beta/snapshots/detail",
                             "/v3/beta/attachments", "/v3/beta/os-quota-sets/beta", "/v2.1/beta/servers",
                             "/v2.1/beta/servers/s/os-volume_attachments", "/v3/alpha2/volumes"})
    EXPECT_EQ(decision(kAlice, "GET", target), 400) << target;
  try {
    authorize_request(kAlice, "GET", "/v3/beta/volumes");
  } catch (const ApiError& e) {
    EXPECT_EQ(std::string(e.what()), "Malformed request URL: the URL's project 'beta' is not this token's project 'alpha'.");
  }
}

TEST(AccessPolicyTest, AnAdminMayNameAnyProject) {
  for (const char* target : {"/v3/beta/volumes", "/v3/alpha/volumes/x", "/v3/beta/os-services",
                             "/v3/beta/scheduler-stats/get_pools", "/v2.1/beta/servers", "/v3/ops/limits?tenant_id=x"})
    EXPECT_EQ(decision(kAdmin, "GET", target), 0) << target;
  EXPECT_EQ(decision(kAdmin, "PUT", "/v3/ops/os-quota-sets/beta"), 0);
}

TEST(AccessPolicyTest, OperatorsResourcesAreForAdmins) {
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/os-services"), 403);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/scheduler-stats/get_pools?detail=true"), 403);
  // Quotas: a member reads its own (and anyone's defaults) and changes none.
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/os-quota-sets/alpha?usage=true"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/os-quota-sets/beta/defaults"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/os-quota-sets/beta"), 403);
  EXPECT_EQ(decision(kAlice, "PUT", "/v3/alpha/os-quota-sets/alpha"), 403);
  EXPECT_EQ(decision(kAlice, "DELETE", "/v3/alpha/os-quota-sets/alpha"), 403);
  // Limits: its own only.
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/limits"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/limits?tenant_id=alpha"), 0);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/limits?tenant_id=beta"), 403);
  EXPECT_EQ(decision(kAlice, "GET", "/v3/alpha/limits?project_id=b%65ta"), 403);
  try {
    require_admin(kAlice, "change quotas");
    ADD_FAILURE() << "a member passed require_admin";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.http_status(), 403);
    EXPECT_EQ(e.fault_name(), "forbidden");
    EXPECT_EQ(std::string(e.what()), "Only an admin may change quotas.");
  }
  EXPECT_NO_THROW(require_admin(kAdmin, "change quotas"));
}

TEST(AccessPolicyTest, AdminVolumeActions) {
  for (const char* action : {"os-force_detach", "os-reset_status", "os-force_delete", "os-migrate_volume"})
    EXPECT_TRUE(admin_only_volume_action(action)) << action;
  for (const char* action : {"os-extend", "os-reserve", "os-unreserve", "os-begin_detaching", "os-roll_detaching",
                             "os-force_detachx", ""})
    EXPECT_FALSE(admin_only_volume_action(action)) << action;
}

TEST(AccessPolicyTest, ObjectsInPaths) {
  auto o = object_in_path("/v3/alpha/volumes/abc/action?x=1");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->project, "alpha");
  EXPECT_EQ(o->kind, "volumes");
  EXPECT_EQ(o->id, "abc");
  EXPECT_EQ(o->project_at, 4u);
  EXPECT_EQ(object_in_path("/v3/p/snapshots/s")->kind, "snapshots");
  EXPECT_EQ(object_in_path("/v3/p/attachments/a/action")->id, "a");
  EXPECT_EQ(object_in_path("/v3/p/volumes"), std::nullopt);
  EXPECT_EQ(object_in_path("/v3/p/volumes/detail"), std::nullopt);
  EXPECT_EQ(object_in_path("/v3/p/volumes/summary"), std::nullopt);
  EXPECT_EQ(object_in_path("/v3/p/types/default"), std::nullopt);
  EXPECT_EQ(object_in_path("/v2.1/servers/s"), std::nullopt);
}

TEST(AccessPolicyTest, ServersAndTheirOwners) {
  EXPECT_EQ(server_in_path("/v2.1/servers/abc"), "abc");
  EXPECT_EQ(server_in_path("/v2.1/alpha/servers/abc/os-volume_attachments/v"), "abc");
  EXPECT_EQ(server_in_path("/v2.1/servers/abc/action?x=1"), "abc");
  EXPECT_EQ(server_in_path("/v2.1/servers"), std::nullopt);
  EXPECT_EQ(server_in_path("/v2.1/servers/detail"), std::nullopt);
  EXPECT_EQ(server_in_path("/v2.1/alpha/servers/detail"), std::nullopt);
  EXPECT_EQ(server_in_path("/v3/alpha/servers/abc"), std::nullopt);
  EXPECT_TRUE(may_see_server(kAlice, "alpha"));
  EXPECT_FALSE(may_see_server(kAlice, "beta"));
  EXPECT_FALSE(may_see_server(kAlice, ""));  // owned by no project: admins only
  EXPECT_TRUE(may_see_server(kAdmin, "beta"));
  EXPECT_TRUE(may_see_server(kAdmin, ""));
}

TEST(AccessPolicyTest, ListsSpanProjectsForAdminsAskingAllTenants) {
  const std::string body;
  auto listed = [&](const Caller& caller, const char* query) {
    RequestHeaders headers;
    headers.caller = caller;
    ApiRequest request{"GET", "/v3/alpha/volumes", query, body, {{"project", "alpha"}}, kMinApiVersion, headers};
    return listed_project(request);
  };
  EXPECT_EQ(listed(kAdmin, "all_tenants=1"), std::nullopt);
  EXPECT_EQ(listed(kAdmin, "all_tenants=True"), std::nullopt);
  EXPECT_EQ(listed(kAdmin, ""), "alpha");
  EXPECT_EQ(listed(kAdmin, "all_tenants=0"), "alpha");
  EXPECT_EQ(listed(kAlice, "all_tenants=1"), "alpha");  // ignored for a member, as Cinder does
}

TEST(AccessPolicyTest, RolesAndProjectNames) {
  EXPECT_EQ(role_from_string("admin"), Role::admin);
  EXPECT_EQ(role_from_string("member"), Role::member);
  EXPECT_EQ(role_from_string("Admin"), std::nullopt);
  EXPECT_EQ(role_from_string(""), std::nullopt);
  EXPECT_EQ(to_string(Role::admin), "admin");
  EXPECT_TRUE(is_project_name("a-b_9"));
  EXPECT_FALSE(is_project_name(""));
  EXPECT_FALSE(is_project_name("a/b"));
  EXPECT_FALSE(is_project_name(std::string(65, 'a')));
}

}  // namespace
}  // namespace volgate::controller
