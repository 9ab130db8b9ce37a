// Reading tgtadm's report of targets and accounts, and the commands that give a target the
// access an iscsi pool is configured with.
#include <gtest/gtest.h>

#include "controller/pools/tgt_access.hpp"

namespace volgate::controller {
namespace {

// As tgt 1.0.85 prints it (trimmed): one target open to all, one with CHAP and a name.
constexpr const char* kShow = R"(Target 1: iqn.2026-11.org.volgate:volume-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2026-11.org.volgate:host-1 alias: hv1
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
        LUN: 1
            Type: disk
            Backing store path: /srv/luns/volume-a.img
    Account information:
    ACL information:
        ALL
Target 3: iqn.2026-11.org.volgate:volume-b
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
    Account information:
        gw
        target-gw (outgoing)
    ACL information:
        10.0.0.0/24
        iqn.2026-11.org.volgate:host-1
)";

using Commands = std::vector<std::vector<std::string>>;

TEST(TgtAccess, ReadsTidsLunsAccountsAndAccessLists) {
  auto targets = parse_tgt_targets(kShow);
  ASSERT_EQ(targets.size(), 2u);
  const TgtTarget& a = targets.at("iqn.2026-11.org.volgate:volume-a");
  EXPECT_EQ(a.tid, 1);
  EXPECT_TRUE(a.has_lun1);
  EXPECT_TRUE(a.incoming_users.empty());
  EXPECT_EQ(a.acl, std::vector<std::string>{"ALL"});  // not the nexus' initiator or address
  const TgtTarget& b = targets.at("iqn.2026-11.org.volgate:volume-b");
  EXPECT_EQ(b.tid, 3);
  EXPECT_FALSE(b.has_lun1);
  EXPECT_EQ(b.incoming_users, std::vector<std::string>{"gw"});  // the outgoing one is not for logging in
  EXPECT_EQ(b.acl, (std::vector<std::string>{"10.0.0.0/24", "iqn.2026-11.org.volgate:host-1"}));
  EXPECT_EQ(parse_tgt_accounts("Account list:\n    gw\n    target-gw\n"),
            (std::vector<std::string>{"gw", "target-gw"}));
  EXPECT_TRUE(parse_tgt_accounts("Account list:\n").empty());
}

TEST(TgtAccess, ThePoolAdmitsItsInitiatorNameOrElseItsAddressesNeverBoth) {
  PoolConfig config{.initiator_name = "iqn.2026-11.org.volgate:host-1"};
  TargetAccess by_name = target_access(config);
  EXPECT_EQ(by_name.names, std::vector<std::string>{"iqn.2026-11.org.volgate:host-1"});
  EXPECT_TRUE(by_name.addresses.empty());
  EXPECT_TRUE(by_name.chap_user.empty());
  config.initiator_addresses = {"10.0.0.5", "10.0.1.0/24", "10.0.0.5"};
  config.chap_user = "gw";
  TargetAccess by_address = target_access(config);
  EXPECT_TRUE(by_address.names.empty());  // tgtd would admit the name from anywhere
  EXPECT_EQ(by_address.addresses, (std::vector<std::string>{"10.0.0.5", "10.0.1.0/24"}));
  EXPECT_EQ(by_address.chap_user, "gw");
}

TEST(TgtAccess, ATargetOpenToAllIsClosedBeforeItsInitiatorIsAdmitted) {
  TgtTarget open{.tid = 1, .acl = {"ALL"}};
  TargetAccess want{.names = {"iqn.2026-11.org.volgate:host-1"}, .chap_user = "gw"};
  EXPECT_EQ(access_commands(1, open, want),
            (Commands{{"--op", "bind", "--mode", "account", "--tid", "1", "--user", "gw"},
                      {"--op", "unbind", "--mode", "target", "--tid", "1", "--initiator-address", "ALL"},
                      {"--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name",
                       "iqn.2026-11.org.volgate:host-1"}}));
}

TEST(TgtAccess, ANewTargetGetsExactlyTheConfiguredAccess) {
  EXPECT_EQ(access_commands(7, TgtTarget{.tid = 7}, {.addresses = {"10.0.0.5", "10.0.1.0/24"}}),
            (Commands{{"--op", "bind", "--mode", "target", "--tid", "7", "--initiator-address", "10.0.0.5"},
                      {"--op", "bind", "--mode", "target", "--tid", "7", "--initiator-address", "10.0.1.0/24"}}));
}

TEST(TgtAccess, ATargetThatHasItsAccessNeedsNothing) {
  TgtTarget has{.tid = 3, .incoming_users = {"gw"}, .acl = {"iqn.2026-11.org.volgate:host-1"}};
  EXPECT_TRUE(access_commands(3, has, {.names = {"iqn.2026-11.org.volgate:host-1"}, .chap_user = "gw"}).empty());
}

TEST(TgtAccess, ChangedSettingsReplaceTheOldOnesNewAccountFirst) {
  // The name changed, addresses are gone, CHAP moved from user "old" to "gw".
  TgtTarget has{.tid = 2, .incoming_users = {"old"}, .acl = {"10.0.0.5", "iqn.2026-11.org.volgate:old"}};
  EXPECT_EQ(access_commands(2, has, {.names = {"iqn.2026-11.org.volgate:new"}, .chap_user = "gw"}),
            (Commands{{"--op", "bind", "--mode", "account", "--tid", "2", "--user", "gw"},
                      {"--op", "unbind", "--mode", "target", "--tid", "2", "--initiator-address", "10.0.0.5"},
                      {"--op", "unbind", "--mode", "target", "--tid", "2", "--initiator-name",
                       "iqn.2026-11.org.volgate:old"},
                      {"--op", "bind", "--mode", "target", "--tid", "2", "--initiator-name",
                       "iqn.2026-11.org.volgate:new"},
                      {"--op", "unbind", "--mode", "account", "--tid", "2", "--user", "old"}}));
  // CHAP no longer configured: the account is unbound, the access list kept.
  TgtTarget chap{.tid = 2, .incoming_users = {"gw"}, .acl = {"iqn.2026-11.org.volgate:new"}};
  EXPECT_EQ(access_commands(2, chap, {.names = {"iqn.2026-11.org.volgate:new"}}),
            (Commands{{"--op", "unbind", "--mode", "account", "--tid", "2", "--user", "gw"}}));
}

}  // namespace
}  // namespace volgate::controller
